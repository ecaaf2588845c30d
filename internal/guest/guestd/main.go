// Command guestd is the agent inside a test guest (package guest): it
// serves the host's requests, one JSON object per line, over the virtio
// serial port guest-init gives it. A request runs a shell script, or
// check's own probes and responders in a namespace of the guest, so that
// what a guest test proves is measured by the same code as the lab's.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/netip"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/bothnia/bothnia/check"
	"github.com/bothnia/bothnia/internal/guest/wire"
	"github.com/bothnia/bothnia/internal/packetsock"
)

func main() {
	port := flag.String("port", "", "the virtio serial port to serve")
	flag.Parse()
	f, err := os.OpenFile(*port, os.O_RDWR, 0)
	if err != nil {
		log.Fatalf("guestd: open %s: %v", *port, err)
	}
	d := &daemon{enc: json.NewEncoder(f), listeners: map[string]*check.Responders{}}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var req wire.Request
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			log.Printf("guestd: bad request: %v", err)
			continue
		}
		go d.serve(req)
	}
	log.Fatalf("guestd: %s closed: %v", *port, sc.Err())
}

type daemon struct {
	mu        sync.Mutex
	enc       *json.Encoder
	listeners map[string]*check.Responders
}

func (d *daemon) reply(r wire.Response) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.enc.Encode(r); err != nil {
		log.Printf("guestd: reply %d: %v", r.ID, err)
	}
}

func (d *daemon) serve(req wire.Request) {
	timeout := time.Duration(req.TimeoutMS) * time.Millisecond
	if timeout <= 0 {
		timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	r := wire.Response{ID: req.ID}
	switch req.Op {
	case wire.OpPing:
	case wire.OpSh:
		r.RC, r.Out, r.Err = sh(ctx, req.Script)
	case wire.OpListen:
		resp, err := check.Listen(req.Namespaces, req.Ports)
		if err != nil {
			r.RC, r.Err = 1, err.Error()
			break
		}
		d.mu.Lock()
		if old := d.listeners[req.Key]; old != nil {
			old.Close()
		}
		d.listeners[req.Key] = resp
		d.mu.Unlock()
	case wire.OpUnlisten:
		d.mu.Lock()
		if old := d.listeners[req.Key]; old != nil {
			old.Close()
			delete(d.listeners, req.Key)
		}
		d.mu.Unlock()
	case wire.OpTCP, wire.OpICMP:
		addr, err := netip.ParseAddr(req.Addr)
		if err != nil {
			r.RC, r.Err = 2, err.Error()
			break
		}
		p := &check.NetProber{NS: func(string) string { return req.Namespace }, Timeout: timeout}
		if req.Op == wire.OpTCP {
			r.Out, err = p.TCP(ctx, "", addr, req.Port)
		} else {
			err = p.ICMP(ctx, "", addr)
		}
		if err != nil {
			r.RC, r.Err = 1, err.Error()
		}
	case wire.OpFrame:
		if err := packetsock.Send(req.Namespace, req.Iface, req.Frame); err != nil {
			r.RC, r.Err = 1, err.Error()
		}
	default:
		r.RC, r.Err = 2, fmt.Sprintf("guestd: no operation %q", req.Op)
	}
	d.reply(r)
}

// sh runs a script with /bin/sh, its own process group killed at the
// deadline so that nothing it started outlives the request by accident
// (a service the test means to keep is started with setsid).
func sh(ctx context.Context, script string) (int, string, string) {
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Env = append(os.Environ(), "PATH=/host:/usr/sbin:/usr/bin:/sbin:/bin")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out, errb limited
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		return 127, "", err.Error()
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		err = <-done
		errb.WriteString("\nguestd: killed at the request's deadline")
	}
	rc := 0
	if err != nil {
		rc = -1
		if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() >= 0 {
			rc = ee.ExitCode()
		}
	}
	return rc, out.String(), errb.String()
}

// limited keeps the first 4 MiB written to it.
type limited struct {
	mu sync.Mutex
	b  []byte
}

func (l *limited) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := 4<<20 - len(l.b); room > 0 {
		if len(p) < room {
			room = len(p)
		}
		l.b = append(l.b, p[:room]...)
	}
	return len(p), nil
}

func (l *limited) WriteString(s string) { _, _ = l.Write([]byte(s)) }

func (l *limited) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}
