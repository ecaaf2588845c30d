package lab

import (
	"context"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/bothnia/bothnia/check"
	"github.com/bothnia/bothnia/internal/flows"
	"github.com/bothnia/bothnia/namespace"
	"github.com/bothnia/bothnia/plan"
	"github.com/bothnia/bothnia/spec"
)

// Issue 20, in the lab: two replicas of the router on Knox. The one that
// serves loses its node in the middle of a download through SNAT; the
// other takes over within a second, the download goes on without a reset
// (conntrackd had given the standby the connection), and at no moment do
// both replicas have their legs up, neither then nor when the killed node
// comes back (as a standby, without a second takeover) nor when the link
// between the sites is cut.
func TestRouterReplicasSurviveTheLossOfANode(t *testing.T) {
	raw, err := os.ReadFile("../examples/knox-epouta-ha.yaml")
	if err != nil {
		t.Fatal(err)
	}
	l, s := newAgentLab(t, string(raw))
	ctx := context.Background()
	serving := func() string {
		t.Helper()
		at, _, err := l.RouterServing(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		return at
	}
	a := serving()
	if a == "" {
		t.Fatal("no replica serves after lab up")
	}
	b := s.Router.Replicas()[0]
	if b == a {
		b = s.Router.Replicas()[1]
	}
	t.Logf("%s serves, %s stands by", a, b)
	if fails := check.Failed(mustCheck(t, l, s)); fails != 0 {
		t.Fatalf("check with router replicas: %d probes failed", fails)
	}

	w := watchReplicas(t, l, s)
	outside := l.OutsideNS()
	endpoint := spec.AllowedPrefix(s.Router.Allow[0].Prefix).Addr().String()
	src, err := flows.StartSource(outside, endpoint+":9001")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	stopEcho, err := flows.StartEcho(outside, endpoint+":9002")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stopEcho)
	vm := l.VMNS("knox-vm2") // on knox-c2, neither replica's node
	down, err := flows.StartDownload(vm, endpoint+":9001", 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(down.Close)
	probe, err := flows.StartProbe(vm, endpoint+":9002", 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(probe.Close)
	time.Sleep(time.Second)
	probe.Reset()

	if _, err := l.KillNode(a); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	for serving() != b {
		if time.Since(killed) > 5*time.Second {
			t.Fatalf("%s does not serve 5 s after %s was killed", b, a)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%s serves %v after %s was killed", b, time.Since(killed).Round(time.Millisecond), a)
	time.Sleep(2 * time.Second)
	gap := probe.MaxGap()
	t.Logf("longest time without an echo through the router: %v", gap.Round(time.Millisecond))
	if gap > time.Second {
		t.Errorf("forwarding stopped for %v; want under 1 s", gap)
	}
	n0, err := down.State()
	if err != nil {
		t.Fatalf("the download through SNAT ended: %v (source: %v)", err, src.Err())
	}
	time.Sleep(300 * time.Millisecond)
	if n1, err := down.State(); err != nil || n1 <= n0 {
		t.Fatalf("the download through SNAT does not go on after the takeover: %d then %d bytes, %v", n0, n1, err)
	}

	// The killed node ran one of Knox's two DHCP and DNS servers: every
	// Knox VM still renews its lease (with the other, if its own is
	// gone) and has a resolver that answers (knox-vm2: knox-c2 is no
	// replica's node, so it is never the one killed).
	for _, vm := range []string{"knox-vm2"} {
		r, err := l.Renew(ctx, vm, 500*time.Millisecond)
		if err != nil {
			t.Errorf("with %s killed: %v", a, err)
			continue
		}
		t.Logf("%s renewed with %s (rebinding %v) in %v", vm, r.Server, r.Rebound, r.Took.Round(time.Millisecond))
		answered := false
		for _, server := range s.DNS.Addresses() {
			if got := l.resolve(vm, server, "A knox-vm1."+s.Fabric.Domain+"."); got == "10.101.128.10" {
				answered = true
			}
		}
		if !answered {
			t.Errorf("with %s killed, no resolver of %v answers %s", a, s.DNS.Addresses(), vm)
		}
	}

	// Revived, the node's replica stands by: no second takeover.
	if _, err := l.ReviveNode(a); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	if at := serving(); at != b {
		t.Errorf("after %s was revived, %q serves; want %s to keep the router", a, at, b)
	}

	// The link between the sites is cut: both replicas are on Knox, with
	// the store; nothing moves, and nothing answers twice.
	sw := l.SwitchNS("knox")
	if err := setLink(sw, "wan0", false); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if at := serving(); at != b {
		t.Errorf("with the sites' link cut, %q serves; want %s", at, b)
	}
	if err := setLink(sw, "wan0", true); err != nil {
		t.Fatal(err)
	}
	if _, err := down.State(); err != nil {
		t.Errorf("the download through SNAT ended: %v", err)
	}
	w.stop()
	if w.both.Load() > 0 {
		t.Errorf("both replicas had their legs up at once in %d of %d samples", w.both.Load(), w.samples.Load())
	}
	t.Logf("%d samples of both replicas' legs, never both up", w.samples.Load())
	if fails := check.Failed(mustCheck(t, l, s)); fails != 0 {
		t.Errorf("check after the failover: %d probes failed", fails)
	}
}

// The store's leader hangs (the member a Knox host runs, of the sites'
// three): writes stop everywhere until the other two elect a leader, the
// serving replica's beats fail and it fences itself; then one replica
// serves again, and at no moment do two.
func TestRouterReplicasWhenTheStoresLeaderHangs(t *testing.T) {
	raw, err := os.ReadFile("../examples/knox-epouta-ha.yaml")
	if err != nil {
		t.Fatal(err)
	}
	l, s := newAgentLab(t, string(raw), func(l *Lab) { l.EtcdMembers = 3 })
	leader := etcdLeader(t, l)
	w := watchReplicas(t, l, s)
	time.Sleep(500 * time.Millisecond)
	hang(t, l, leader)
	hung := time.Now()
	served := ""
	for served == "" && time.Since(hung) < 20*time.Second {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		served, _, _ = l.RouterServing(ctx, s)
		cancel()
		time.Sleep(100 * time.Millisecond)
	}
	if served == "" {
		t.Fatalf("no replica serves 20 s after the store's leader %s hung", leader)
	}
	time.Sleep(3 * time.Second)
	w.stop()
	t.Logf("%s (the leader) hung: %s serves; no replica's legs were up for at most %v; %d samples",
		leader, served, time.Duration(w.noneMax.Load()).Round(time.Millisecond), w.samples.Load())
	if w.both.Load() > 0 {
		t.Errorf("both replicas had their legs up at once in %d of %d samples", w.both.Load(), w.samples.Load())
	}
}

// replicaWatch samples both replicas' legs as fast as netlink answers.
type replicaWatch struct {
	samples, both atomic.Int64
	noneMax       atomic.Int64 // the longest time no replica's legs were up (ns)
	done          chan struct{}
	wg            sync.WaitGroup
}

func watchReplicas(t *testing.T, l *Lab, s *spec.Spec) *replicaWatch {
	t.Helper()
	w := &replicaWatch{done: make(chan struct{})}
	var handles []*netlink.Handle
	for _, n := range s.Router.Replicas() {
		h, nsh, err := namespace.Netlink(l.SubPrefix(n) + "qrouter-" + plan.RouterID(s))
		if err != nil {
			t.Fatal(err)
		}
		nsh.Close()
		handles = append(handles, h)
	}
	up := func(h *netlink.Handle) bool {
		l, err := h.LinkByName("gw")
		return err == nil && l.Attrs().Flags&net.FlagUp != 0
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		lastUp := time.Now()
		for {
			select {
			case <-w.done:
				for _, h := range handles {
					h.Close()
				}
				return
			default:
			}
			n := 0
			for _, h := range handles {
				if up(h) {
					n++
				}
			}
			w.samples.Add(1)
			if n > 1 {
				w.both.Add(1)
			}
			if n > 0 {
				lastUp = time.Now()
			} else if none := time.Since(lastUp); int64(none) > w.noneMax.Load() {
				w.noneMax.Store(int64(none))
			}
			time.Sleep(time.Millisecond)
		}
	}()
	t.Cleanup(w.stop)
	return w
}

func (w *replicaWatch) stop() {
	select {
	case <-w.done:
	default:
		close(w.done)
	}
	w.wg.Wait()
}

func setLink(ns, dev string, up bool) error {
	h, nsh, err := namespace.Netlink(ns)
	if err != nil {
		return err
	}
	defer nsh.Close()
	defer h.Close()
	l, err := h.LinkByName(dev)
	if err != nil {
		return err
	}
	if up {
		return h.LinkSetUp(l)
	}
	return h.LinkSetDown(l)
}
