package bench

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A step's load: who used the CPU and where datagrams were dropped, so a
// rate search can tell the server's limit from the load generator's or the
// kernel's. Each side's UDP receive-buffer drops come from its namespace's
// /proc/net/snmp.
type load struct {
	wall     time.Duration
	genCPU   time.Duration // the load generator (and what it forked)
	srvCPU   time.Duration // the server's process (this one when it runs here)
	srvDrops int64         // datagrams the server's namespace dropped: receive buffer full
	genDrops int64         // the same on the generator's side
	cli, srv string
	pid      int // the server's process; 0: this one
	drops0   [2]int64
	t0       time.Time
	cpu0     time.Duration
}

// startLoad begins a step against the server in namespace srv, run by
// process pid (0: this process), loaded from namespace cli.
func startLoad(srv, cli string, pid int) *load {
	l := &load{srv: srv, cli: cli, pid: pid, t0: time.Now(), cpu0: procCPU(pid)}
	l.drops0 = [2]int64{udpRcvbufErrors(srv), udpRcvbufErrors(cli)}
	return l
}

// done closes the step; gen is the generator's finished command.
func (l *load) done(gen *exec.Cmd) {
	l.wall = time.Since(l.t0)
	l.srvCPU = procCPU(l.pid) - l.cpu0
	if gen != nil && gen.ProcessState != nil {
		l.genCPU = gen.ProcessState.UserTime() + gen.ProcessState.SystemTime()
	}
	l.srvDrops = udpRcvbufErrors(l.srv) - l.drops0[0]
	l.genDrops = udpRcvbufErrors(l.cli) - l.drops0[1]
}

// generatorBound reports whether the load generator used a whole core
// (more than 90% of the step's time): the step then measured it as much as
// the server.
func (l *load) generatorBound() bool { return l.genCPU > l.wall*9/10 }

// String is the step's load in one line: CPU as a share of one core.
func (l *load) String() string {
	pct := func(d time.Duration) string {
		if l.wall <= 0 {
			return "-"
		}
		return strconv.Itoa(int(100*d/l.wall)) + "%"
	}
	return fmt.Sprintf("generator CPU %s, server CPU %s, receive-buffer drops: server %d, generator %d",
		pct(l.genCPU), pct(l.srvCPU), l.srvDrops, l.genDrops)
}

func procCPU(pid int) time.Duration {
	if pid != 0 {
		return cpuTime(pid)
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// udpRcvbufErrors is the namespace's count of UDP datagrams dropped for a
// full receive buffer (-1 if it cannot be read).
func udpRcvbufErrors(ns string) int64 {
	out, err := exec.Command("ip", "netns", "exec", ns, "cat", "/proc/net/snmp").Output()
	if err != nil {
		return -1
	}
	var head []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if head == nil {
			head = f
			continue
		}
		for i, name := range head {
			if name == "RcvbufErrors" && i < len(f) {
				n, _ := strconv.ParseInt(f[i], 10, 64)
				return n
			}
		}
	}
	return -1
}
