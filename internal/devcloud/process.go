package devcloud

// The processes of a deployment: started in their own sessions with pid
// files, stopped by session, and waited for on their ports.

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// daemon starts a long-lived process in its own session (in a network
// namespace when ns is set) and records its pid.
func (d *Deployment) daemon(name, ns string, argv ...string) error {
	return d.daemonEnv(name, ns, nil, argv...)
}

func (d *Deployment) daemonEnv(name, ns string, env []string, argv ...string) error {
	if err := os.MkdirAll(d.path("pid"), 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(d.path("log"), 0o755); err != nil {
		return err
	}
	if ns != "" {
		argv = append([]string{"ip", "netns", "exec", ns}, argv...)
	}
	logf, err := os.OpenFile(d.path("log", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// A crashing Erlang VM writes its dump (MnesiaCore.*, erl_crash.dump)
	// in its working directory: the deployment's, not the test's package.
	cmd.Dir = d.Dir
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("devcloud: start %s: %w", name, err)
	}
	go func() { _ = cmd.Wait() }() // reaped if it dies while this process runs
	return os.WriteFile(d.path("pid", name), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644)
}

// stopPidFile ends the session a daemon leads (the agents' sudo and
// privsep helpers are in it too, in process groups of their own) and
// removes its pid file.
func stopPidFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return os.Remove(path)
	}
	signal := func(sig syscall.Signal) int {
		n := 0
		// A daemon that left its session (dnsmasq) is its pid alone.
		for _, p := range append(session(pid), pid) {
			if syscall.Kill(p, sig) == nil {
				n++
			}
		}
		return n
	}
	signal(syscall.SIGTERM)
	for i := 0; i < 100 && signal(0) > 0; i++ {
		time.Sleep(100 * time.Millisecond)
	}
	signal(syscall.SIGKILL)
	return os.Remove(path)
}

// session lists the processes of the session sid leads.
func session(sid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp session ...: comm may hold spaces.
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 3 && f[3] == strconv.Itoa(sid) {
			out = append(out, pid)
		}
	}
	return out
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func waitTCP(ctx context.Context, addr string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func waitAPI(ctx context.Context, endpoint string, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", endpoint+"v2.0/networks", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET /v2.0/networks: %s", resp.Status)
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func readTail(path string) string {
	b, _ := os.ReadFile(path)
	return tail(string(b))
}

func tail(s string) string {
	if len(s) > 4000 {
		s = s[len(s)-4000:]
	}
	return s
}

// alive reports whether the process of a pid file runs.
func alive(pidFile string) bool {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	return err == nil && pid > 1 && syscall.Kill(pid, 0) == nil
}
