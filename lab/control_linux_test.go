package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bothnia/bothnia/internal/kerneltest"
	"github.com/bothnia/bothnia/namespace"
	"github.com/bothnia/bothnia/node"
	"github.com/bothnia/bothnia/spec"
)

// The live fabric: a remote-group-only rule, a member on each node
// joining and leaving while traffic flows.
const liveYAML = `
fabric: {name: live, cidr: 10.101.0.0/16}
sites:
  epouta:
    cidr: 10.101.0.0/17
    pools: [10.101.0.4-10.101.127.255]
    nodes: [{name: epouta-c1, role: compute, underlay: 172.30.0.2}]
  knox:
    cidr: 10.101.128.0/17
    pools: [10.101.128.1-10.101.255.254]
    nodes: [{name: knox-c1, role: compute, underlay: 172.30.0.1}]
link: {mode: vxlan}
security_groups:
  - name: rg
    rules:
      - {direction: ingress, protocol: tcp, port_range: "7000", remote_group: rg}
networks:
  - name: mgmt
    segment: 300
    vms:
      - {name: k1, node: knox-c1, ip: 10.101.128.10, mac: "fa:16:3e:80:00:0a", security_groups: [rg]}
      - {name: k2, node: knox-c1, ip: 10.101.128.11, mac: "fa:16:3e:80:00:0b", security_groups: [rg]}
`

// sink counts what arrives on a TCP port inside a VM, per connection, and
// when each byte came.
type sink struct {
	mu    sync.Mutex
	conns []*flow
}

type flow struct {
	mu       sync.Mutex
	n        int
	last     time.Time
	maxGap   time.Duration
	err      error // how the connection ended, if it did
	finished bool
}

func (f *flow) snapshot() (int, time.Time, time.Duration, error, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n, f.last, f.maxGap, f.err, f.finished
}

func startSink(t *testing.T, ns string, port int) *sink {
	t.Helper()
	var ln net.Listener
	if err := namespace.Do(ns, func() error {
		var err error
		ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	s := &sink{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f := &flow{}
			s.mu.Lock()
			s.conns = append(s.conns, f)
			s.mu.Unlock()
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					now := time.Now()
					f.mu.Lock()
					if n > 0 {
						if !f.last.IsZero() && now.Sub(f.last) > f.maxGap {
							f.maxGap = now.Sub(f.last)
						}
						f.n += n
						f.last = now
					}
					if err != nil {
						f.err, f.finished = err, true
						f.mu.Unlock()
						return
					}
					f.mu.Unlock()
				}
			}()
		}
	}()
	return s
}

func (s *sink) latest() *flow {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.conns) == 0 {
		return nil
	}
	return s.conns[len(s.conns)-1]
}

func dialFrom(ns, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := namespace.Do(ns, func() error {
		var err error
		c, err = net.DialTimeout("tcp4", addr, timeout)
		return err
	})
	return c, err
}

// trickle writes a byte every interval until stop is closed; it returns
// the first write error.
func trickle(c net.Conn, every time.Duration, stop <-chan struct{}) <-chan error {
	done := make(chan error, 1)
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-stop:
				done <- nil
				return
			case <-t.C:
				_ = c.SetWriteDeadline(time.Now().Add(time.Second))
				if _, err := c.Write([]byte{'x'}); err != nil {
					done <- err
					return
				}
			}
		}
	}()
	return done
}

func newAgentLab(t *testing.T, raw string, opts ...func(*Lab)) (*Lab, *spec.Spec) {
	t.Helper()
	s, err := spec.Parse([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	StateDir = t.TempDir()
	kerneltest.RequireRoot(t)
	l, err := New(kerneltest.Prefix(t))
	if err != nil {
		t.Fatal(err)
	}
	l.Agents = true
	for _, o := range opts {
		o(l)
	}
	foreignCloud(t, l, s)
	t.Cleanup(func() {
		if _, err := l.Down(); err != nil {
			t.Errorf("lab down: %v", err)
		}
		if left, _ := namespace.List(l.All()); len(left) != 0 {
			t.Errorf("lab down left namespaces %v", left)
		}
		if l.AgentsRunning() {
			t.Error("lab down left etcd running")
		}
	})
	if _, err := l.Up(s, []byte(raw)); err != nil {
		t.Fatalf("lab up: %v", err)
	}
	return l, s
}

// edit returns the lab's spec changed by f, as a pushable spec.
func edit(t *testing.T, l *Lab, f func(*spec.Spec)) *spec.Spec {
	t.Helper()
	s, err := l.Spec()
	if err != nil {
		t.Fatal(err)
	}
	f(s)
	return s
}

func vm(s *spec.Spec, name string) *spec.VM {
	v, _ := s.VM(name)
	return v
}

// push pushes a spec into the lab's store, waits for every agent and
// returns how long that took.
func push(t *testing.T, l *Lab, s *spec.Spec) time.Duration {
	t.Helper()
	t0 := time.Now()
	if _, err := l.Push(s); err != nil {
		t.Fatalf("push: %v", err)
	}
	return time.Since(t0)
}

// assertCut checks that a stream stops delivering within a second of the
// change that revoked it, and stays stopped.
func assertCut(t *testing.T, what string, f *flow, changed time.Time) {
	t.Helper()
	time.Sleep(1200 * time.Millisecond)
	n1, last, _, _, _ := f.snapshot()
	time.Sleep(500 * time.Millisecond)
	n2, _, _, _, _ := f.snapshot()
	if n2 != n1 {
		t.Errorf("%s: the established stream still delivers %d bytes after the change", what, n2-n1)
	}
	if last.After(changed.Add(time.Second)) {
		t.Errorf("%s: bytes arrived %v after the change, more than a second", what, last.Sub(changed))
	}
}

func TestControlPlaneLive(t *testing.T) {
	l, _ := newAgentLab(t, liveYAML)
	k1 := l.VMNS("k1")
	srv := startSink(t, k1, 7000)

	// A VM booted at the other site in the remote group is admitted.
	if _, err := l.AddVM(NewVM{Name: "e1", Network: "mgmt", Node: "epouta-c1", SecurityGroups: []string{"rg"}}); err != nil {
		t.Fatal(err)
	}
	e1 := l.VMNS("e1")
	c, err := dialFrom(e1, "10.101.128.10:7000", time.Second)
	if err != nil {
		t.Fatalf("e1, booted live in rg at ePouta, cannot reach k1: %v", err)
	}
	c.Close()

	// Membership: out of the group, back in; each push waits for both
	// sites' agents, so its duration bounds the propagation.
	out := edit(t, l, func(s *spec.Spec) { vm(s, "e1").SecurityGroups = []string{"default"} })
	in := edit(t, l, func(*spec.Spec) {})
	if d := push(t, l, out); d > time.Second {
		t.Errorf("leaving the group took %v to reach both sites", d)
	}
	if c, err := dialFrom(e1, "10.101.128.10:7000", 300*time.Millisecond); err == nil {
		c.Close()
		t.Fatal("e1 out of rg still opens connections to k1")
	}
	if d := push(t, l, in); d > time.Second {
		t.Errorf("joining the group took %v to reach both sites", d)
	}

	// An established stream is cut when e1 leaves the group...
	stream := func() (*flow, chan struct{}) {
		c, err := dialFrom(e1, "10.101.128.10:7000", time.Second)
		if err != nil {
			t.Fatalf("e1 in rg cannot reach k1: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		stop := make(chan struct{})
		trickle(c, 20*time.Millisecond, stop)
		time.Sleep(300 * time.Millisecond)
		f := srv.latest()
		if n, _, _, _, _ := f.snapshot(); n == 0 {
			t.Fatal("the stream delivers nothing before the change")
		}
		return f, stop
	}
	f, stop := stream()
	t0 := time.Now()
	push(t, l, out)
	assertCut(t, "e1 left rg", f, t0)
	close(stop)

	// ... and when the rule that admitted it is deleted.
	push(t, l, in)
	f, stop = stream()
	noRule := edit(t, l, func(s *spec.Spec) { s.SecurityGroup("rg").Rules = s.SecurityGroup("rg").Rules[1:] })
	t0 = time.Now()
	push(t, l, noRule)
	assertCut(t, "the admitting rule was deleted", f, t0)
	close(stop)
	push(t, l, in)

	// A restart of an agent in the middle of a transfer: no reset, no stall.
	f, stop = stream()
	pid, ok := running(l.pidFile("agent-knox-c1"))
	if !ok {
		t.Fatal("no agent on knox-c1")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if _, err := l.controlPlane(mustDesired(t, l)); err != nil { // starts what is missing, waits for convergence
		t.Fatalf("restart the agent: %v", err)
	}
	time.Sleep(500 * time.Millisecond)
	close(stop)
	time.Sleep(100 * time.Millisecond)
	if _, _, gap, err, finished := f.snapshot(); finished || gap > time.Second {
		t.Errorf("across the agent's restart: longest stall %v, ended %v (%v)", gap, finished, err)
	}

	// Drift: the firewall tables deleted by hand come back by themselves,
	// and spoofing is stopped again.
	node := l.NodeNS("knox-c1")
	for _, table := range []string{"inet bothnia-fw", "bridge bothnia-l2"} {
		if out, err := exec.Command("ip", "netns", "exec", node, "nft", "delete", "table", strings.Fields(table)[0], strings.Fields(table)[1]).CombinedOutput(); err != nil {
			t.Fatalf("delete %s: %v: %s", table, err, out)
		}
	}
	restored := false
	for i := 0; i < 60 && !restored; i++ {
		time.Sleep(100 * time.Millisecond)
		restored = exec.Command("ip", "netns", "exec", node, "nft", "list", "table", "bridge", "bothnia-l2").Run() == nil &&
			exec.Command("ip", "netns", "exec", node, "nft", "list", "table", "inet", "bothnia-fw").Run() == nil
	}
	if !restored {
		t.Fatal("the agent did not restore the deleted tables within 6 s")
	}
	time.Sleep(200 * time.Millisecond)
	if out, err := exec.Command("ip", "-n", l.VMNS("k2"), "addr", "add", "10.101.128.99/16", "dev", VMDev).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var spoof net.Conn
	err = namespace.Do(l.VMNS("k2"), func() error {
		d := net.Dialer{Timeout: 500 * time.Millisecond, LocalAddr: &net.TCPAddr{IP: net.ParseIP("10.101.128.99")}}
		var err error
		spoof, err = d.Dial("tcp4", "10.101.128.10:7000")
		return err
	})
	if err == nil {
		spoof.Close()
		t.Error("a forged source reaches k1 after the tables were restored")
	}

	// The store goes away: traffic keeps flowing, the agents say not
	// ready; it comes back: they converge again.
	epid, _ := running(l.pidFile("etcd"))
	if err := syscall.Kill(epid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	notReady := false
	for i := 0; i < 80 && !notReady; i++ {
		time.Sleep(100 * time.Millisecond)
		notReady = readyz(t, node) == http.StatusServiceUnavailable
	}
	if !notReady {
		t.Error("with etcd gone the agent still reports ready")
	}
	if c, err := dialFrom(e1, "10.101.128.10:7000", time.Second); err != nil {
		t.Errorf("with etcd gone, traffic stopped: %v", err)
	} else {
		c.Close()
	}
	if _, err := l.controlPlane(mustDesired(t, l)); err != nil {
		t.Fatalf("etcd back: %v", err)
	}
	// Both sites' agents: the change below waits for every one of them.
	for _, n := range []string{node, l.NodeNS("epouta-c1")} {
		code := 0
		for i := 0; i < 80 && code != http.StatusOK; i++ {
			time.Sleep(100 * time.Millisecond)
			code = readyz(t, n)
		}
		if code != http.StatusOK {
			t.Errorf("etcd back for 8 s, the agent in %s still says %d on /readyz", n, code)
		}
	}
	// And it converges changes again.
	if d := push(t, l, edit(t, l, func(s *spec.Spec) { vm(s, "e1").SecurityGroups = []string{"default"} })); d > time.Second {
		t.Errorf("after etcd came back a change took %v", d)
	}
}

func mustDesired(t *testing.T, l *Lab) *node.Fabric {
	t.Helper()
	s, err := l.Spec()
	if err != nil {
		t.Fatal(err)
	}
	ls, err := LabSpec(s)
	if err != nil {
		t.Fatal(err)
	}
	fab, err := node.Desired(ls)
	if err != nil {
		t.Fatal(err)
	}
	return fab
}

// readyz asks a node's agent, inside the node's namespace (the socket is
// dialled there; HTTP then runs over it from anywhere).
func readyz(t *testing.T, ns string) int {
	t.Helper()
	conn, err := dialFrom(ns, AgentAddr, 500*time.Millisecond)
	if err != nil {
		return 0
	}
	defer conn.Close()
	cl := http.Client{Timeout: time.Second, Transport: &http.Transport{
		DialContext: func(context.Context, string, string) (net.Conn, error) { return conn, nil },
	}}
	resp, err := cl.Get("http://" + AgentAddr + "/readyz")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// A revoked stream stays cut when the side still allowed to send speaks
// first: conntrack picks a mid-stream packet up as a new connection, so
// an answer from the server (allowed out by its default egress) would open
// an entry in its direction, and the client's packets would pass as its
// replies.
func TestRevokedStreamStaysCutWhenTheServerSpeaks(t *testing.T) {
	l, _ := newAgentLab(t, liveYAML)
	k1 := l.VMNS("k1")
	var ln net.Listener
	if err := namespace.Do(k1, func() error {
		var err error
		ln, err = net.Listen("tcp4", ":7000")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			accepted <- c
		}
	}()
	if _, err := l.AddVM(NewVM{Name: "e1", Network: "mgmt", Node: "epouta-c1", SecurityGroups: []string{"rg"}}); err != nil {
		t.Fatal(err)
	}
	c, err := dialFrom(l.VMNS("e1"), "10.101.128.10:7000", time.Second)
	if err != nil {
		t.Fatalf("e1 in rg cannot reach k1: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	var srv net.Conn
	select {
	case srv = <-accepted:
		t.Cleanup(func() { srv.Close() })
	case <-time.After(2 * time.Second):
		t.Fatal("k1 accepted nothing")
	}
	buf := make([]byte, 4096)
	if _, err := c.Write([]byte("before")); err != nil {
		t.Fatal(err)
	}
	_ = srv.SetReadDeadline(time.Now().Add(time.Second))
	if n, err := srv.Read(buf); err != nil || string(buf[:n]) != "before" {
		t.Fatalf("the stream does not work before the change: %q %v", buf[:n], err)
	}

	push(t, l, edit(t, l, func(s *spec.Spec) { vm(s, "e1").SecurityGroups = []string{"default"} }))
	time.Sleep(500 * time.Millisecond) // the revocation runs beside the converge

	// The server speaks first, then the client, for over a second.
	if _, err := srv.Write([]byte("server speaks")); err != nil {
		t.Fatal(err)
	}
	got := make(chan int, 1)
	go func() {
		total := 0
		_ = srv.SetReadDeadline(time.Now().Add(2 * time.Second))
		for {
			n, err := srv.Read(buf)
			total += n
			if err != nil {
				got <- total
				return
			}
		}
	}()
	for i := 0; i < 15; i++ {
		_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		_, _ = c.Write([]byte("after"))
		time.Sleep(100 * time.Millisecond)
	}
	if n := <-got; n > 0 {
		t.Errorf("after e1 left the group and k1 wrote to it, %d bytes from e1 reached k1: the revoked stream reopened in k1's direction", n)
	}
}
