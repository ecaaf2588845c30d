package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/bothnia/bothnia/internal/flows"
	"github.com/bothnia/bothnia/lab"
	"github.com/bothnia/bothnia/namespace"
	"github.com/bothnia/bothnia/plan"
	"github.com/bothnia/bothnia/spec"
)

// FailoverOptions configures bench failover.
type FailoverOptions struct {
	Spec   string // a spec whose router has replicas
	Kills  int    // per kind of replica
	Prefix string // the lab's
}

// failoverRun is what one kind of replicas did over its kills.
type failoverRun struct {
	name                  string
	outage, dns, takeover []time.Duration
	resets, renewed       int
	rebound, kills        int
}

// Failover kills the node of the serving router replica again and again
// in a lab of the spec, during a download through SNAT, a UDP echo every
// 10 ms through the router, a DNS query loop to the site's resolvers and
// a lease renewal after each kill, and reports, per kill, how long
// forwarding and name resolution stopped, whether the download survived
// and whether the lease was renewed. It does so three times in one run,
// each in a lab of its own: bothnia's replicas as they are (the election
// through the store, the connection state synchronised by conntrackd),
// the same without conntrackd, and Neutron L3 HA's way (keepalived's
// VRRP as Neutron configures it elects, no connection state).
func Failover(w io.Writer, o FailoverOptions) error {
	raw, err := os.ReadFile(o.Spec)
	if err != nil {
		return err
	}
	s, err := spec.Parse(raw)
	if err != nil {
		return err
	}
	if s.Router == nil || !s.Router.Replicated() {
		return fmt.Errorf("bench failover: %s's router has no replicas; list two nodes under router.nodes (examples/knox-epouta-ha.yaml)", o.Spec)
	}
	vm, err := failoverVM(s)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "bench failover: %s, router %s on %v, %d kills of the serving replica's node per kind; traffic from %s (%s)\n",
		o.Spec, s.Router.Name, s.Router.Replicas(), o.Kills, vm.Name, vm.Node)
	var runs []*failoverRun
	for _, k := range failoverKinds {
		run, err := failoverKind(w, o, s, raw, vm, k)
		if err != nil {
			return err
		}
		runs = append(runs, run)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "%-40s %6s  %-26s  %-26s  %-20s  %s\n", "", "kills", "forwarding stopped p50/p99/max", "DNS unanswered p50/p99/max", "downloads reset", "leases renewed")
	for _, r := range runs {
		o50, o99, omx := quantiles(r.outage)
		d50, d99, dmx := quantiles(r.dns)
		fmt.Fprintf(w, "%-40s %6d  %-30s  %-26s  %-20s  %d of %d (%d by the other server)\n", r.name, r.kills,
			fmt.Sprintf("%v/%v/%v", ms(o50), ms(o99), ms(omx)), fmt.Sprintf("%v/%v/%v", ms(d50), ms(d99), ms(dmx)),
			fmt.Sprintf("%d of %d", r.resets, r.kills), r.renewed, r.kills, r.rebound)
	}
	b50, _, _ := quantiles(runs[0].outage)
	for _, r := range runs[1:] {
		p50, _, _ := quantiles(r.outage)
		if b50 > 0 {
			fmt.Fprintf(w, "forwarding stopped, median, %s / bothnia: %.1fx\n", r.name, float64(p50)/float64(b50))
		}
	}
	return nil
}

// A kind of replicas the bench fails over: bothnia's, the same without
// connection state, and Neutron L3 HA's (keepalived's VRRP elects).
type failoverMode struct {
	name                  string
	noStateSync, vrrpPeer bool
}

var failoverKinds = []failoverMode{
	{name: "bothnia (store election + conntrackd)"},
	{name: "no state sync (store election only)", noStateSync: true},
	{name: "keepalived (Neutron L3 HA's way)", vrrpPeer: true},
}

// failoverKind brings a lab of the spec up as the kind runs its replicas,
// starts the traffic, kills, and takes the lab down.
func failoverKind(w io.Writer, o FailoverOptions, s *spec.Spec, raw []byte, vm *spec.VM, k failoverMode) (*failoverRun, error) {
	ctx := context.Background()
	if k.vrrpPeer {
		if _, err := exec.LookPath("keepalived"); err != nil {
			return nil, fmt.Errorf("bench failover: the Neutron L3 HA peer needs keepalived: run scripts/install-bench-deps.sh (%w)", err)
		}
	}
	l, err := lab.New(o.Prefix)
	if err != nil {
		return nil, err
	}
	l.Agents, l.Foreign, l.NoStateSync, l.KeepalivedPeer = true, lab.ForeignStandIn, k.noStateSync, k.vrrpPeer
	defer l.Down()
	if _, err := l.Up(s, raw); err != nil {
		return nil, fmt.Errorf("bench failover: lab up: %w", err)
	}
	ls, err := lab.LabSpec(s)
	if err != nil {
		return nil, err
	}
	// keepalived elects after its master-down time (three adverts).
	for start := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		if at, _, err := l.RouterServing(ctx, ls); err == nil && at != "" {
			break
		}
		if time.Since(start) > 30*time.Second {
			return nil, fmt.Errorf("bench failover: %s: no replica serves 30 s after lab up", k.name)
		}
	}
	endpoint := spec.AllowedPrefix(s.Router.Allow[0].Prefix).Addr().String()
	src, err := flows.StartSource(l.OutsideNS(), endpoint+":9001")
	if err != nil {
		return nil, err
	}
	defer src.Close()
	stopEcho, err := flows.StartEcho(l.OutsideNS(), endpoint+":9002")
	if err != nil {
		return nil, err
	}
	defer stopEcho()
	probe, err := flows.StartProbe(l.VMNS(vm.Name), endpoint+":9002", 10*time.Millisecond)
	if err != nil {
		return nil, err
	}
	defer probe.Close()
	var resolvers []string
	if s.DNS != nil {
		resolvers = s.DNS.Addresses()
	}
	dns, err := startDNSLoop(l.VMNS(vm.Name), resolvers, vm.Name+"."+s.Fabric.Domain+".")
	if err != nil {
		return nil, err
	}
	defer dns.close()
	run := &failoverRun{name: k.name}
	return run, failoverKills(w, l, ls, vm, endpoint, probe, dns, run, o.Kills)
}

func ms(d time.Duration) time.Duration { return d.Round(time.Millisecond) }

// logSince is up to max lines of a slog text log written at or after t,
// their change details left out.
func logSince(path string, t time.Time, max int) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return []string{err.Error()}
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		ts, ok := strings.CutPrefix(line, "time=")
		if !ok || strings.Contains(line, "msg=change") {
			continue
		}
		ts, _, _ = strings.Cut(ts, " ")
		if at, err := time.Parse(time.RFC3339Nano, ts); err == nil && !at.Before(t) && len(out) < max {
			out = append(out, line)
		}
	}
	return out
}

// failoverVM is the VM the traffic comes from: on the router's network,
// at a site with DHCP, on a managed node that holds no replica, so that no
// kill takes it down.
func failoverVM(s *spec.Spec) (*spec.VM, error) {
	n := plan.InfraNetwork(s)
	for _, vm := range n.VMs {
		site := s.Sites[s.NodeSite(vm.Node)]
		if site.DHCP != nil && !site.Foreign() && !slices.Contains(s.Router.Replicas(), vm.Node) {
			return vm, nil
		}
	}
	return nil, fmt.Errorf("bench failover: network %s has no VM on a managed node without a router replica; add one", n.Name)
}

func failoverKills(w io.Writer, l *lab.Lab, s *spec.Spec, vm *spec.VM, endpoint string, probe *flows.Probe, dns *dnsLoop, run *failoverRun, kills int) error {
	ctx := context.Background()
	down, err := flows.StartDownload(l.VMNS(vm.Name), endpoint+":9001", 3*time.Second)
	if err != nil {
		return err
	}
	defer func() { down.Close() }()
	alive := true
	for i := 0; i < kills; i++ {
		if !alive {
			down.Close()
			if down, err = flows.StartDownload(l.VMNS(vm.Name), endpoint+":9001", 3*time.Second); err != nil {
				return err
			}
		}
		time.Sleep(500 * time.Millisecond)
		a, _, err := l.RouterServing(ctx, s)
		if err != nil || a == "" {
			return fmt.Errorf("bench failover: no replica serves before kill %d: %v", i+1, err)
		}
		probe.Reset()
		dns.Reset()
		if _, err := l.KillNode(a); err != nil {
			return err
		}
		killed := time.Now()
		var b string
		for {
			b, _, err = l.RouterServing(ctx, s)
			if err == nil && b != "" && b != a {
				run.takeover = append(run.takeover, time.Since(killed))
				break
			}
			if time.Since(killed) > 30*time.Second {
				return fmt.Errorf("bench failover: no replica took over 30 s after %s was killed", a)
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(2 * time.Second)
		run.outage = append(run.outage, probe.MaxGap())
		if gap := probe.MaxGap(); gap > run.takeover[len(run.takeover)-1]+500*time.Millisecond {
			// Forwarding lagged the election by more than half a second:
			// what the new holder's agent and the VM's node's agent did
			// meanwhile, to tell where the time went.
			for _, n := range []string{b, vm.Node} {
				fmt.Fprintf(w, "  forwarding stopped %v after the kill of %s; agent-%s's log from then:\n", ms(gap), a, n)
				for _, line := range logSince(l.ServiceLog("agent-"+n), killed.Add(-100*time.Millisecond), 40) {
					fmt.Fprintf(w, "    %s\n", line)
				}
			}
		}
		run.dns = append(run.dns, dns.MaxGap())
		run.kills++
		// A reset reaches the source, not the VM, whose download just
		// stops: kept means it still grows.
		n0, _ := down.State()
		time.Sleep(300 * time.Millisecond)
		n1, err := down.State()
		if alive = err == nil && n1 > n0; !alive {
			run.resets++
		}
		if r, err := l.Renew(ctx, vm.Name, 300*time.Millisecond); err == nil {
			run.renewed++
			if r.Rebound {
				run.rebound++
			}
		}
		if _, err := l.ReviveNode(a); err != nil {
			return err
		}
		// The revived replica's agent converges and its conntrackd gets
		// the serving replica's table before the next kill.
		time.Sleep(2500 * time.Millisecond)
		fmt.Fprintf(w, "  %s: kill %d of %s: took over in %v, forwarding stopped %v, DNS %v\n", run.name, i+1, a,
			ms(run.takeover[len(run.takeover)-1]), ms(run.outage[len(run.outage)-1]), ms(run.dns[len(run.dns)-1]))
	}
	return nil
}

// dnsLoop asks the resolvers for a name every 20 ms as a stub resolver
// does: the first, then the next after 150 ms without an answer. It keeps
// the longest time without an answer.
type dnsLoop struct {
	flows.Silence
	stop chan struct{}
	wg   sync.WaitGroup
}

func startDNSLoop(ns string, resolvers []string, name string) (*dnsLoop, error) {
	if len(resolvers) == 0 {
		return nil, errors.New("bench failover: the spec has no dns")
	}
	var conns []*mdns.Conn
	for _, r := range resolvers {
		var c net.Conn
		if err := namespace.Do(ns, func() error {
			var err error
			c, err = net.Dial("udp4", net.JoinHostPort(r, "53"))
			return err
		}); err != nil {
			return nil, err
		}
		conns = append(conns, &mdns.Conn{Conn: c})
	}
	d := &dnsLoop{stop: make(chan struct{})}
	d.Start()
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-d.stop:
				return
			case <-tick.C:
			}
			m := new(mdns.Msg)
			m.SetQuestion(name, mdns.TypeA)
			for _, c := range conns {
				if ask(c, m) {
					d.Heard()
					break
				}
			}
		}
	}()
	return d, nil
}

// ask sends m on c and waits 150 ms for its answer.
func ask(c *mdns.Conn, m *mdns.Msg) bool {
	m.Id = mdns.Id()
	_ = c.SetDeadline(time.Now().Add(150 * time.Millisecond))
	if err := c.WriteMsg(m); err != nil {
		return false
	}
	for {
		r, err := c.ReadMsg()
		if err != nil {
			return false
		}
		if r.Id == m.Id {
			return r.Rcode == mdns.RcodeSuccess && len(r.Answer) > 0
		}
	}
}

func (d *dnsLoop) close() {
	close(d.stop)
	d.wg.Wait()
}
