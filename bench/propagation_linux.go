package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/nftables"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.yaml.in/yaml/v3"

	"github.com/bothnia/bothnia/agent"
	"github.com/bothnia/bothnia/lab"
	"github.com/bothnia/bothnia/namespace"
	"github.com/bothnia/bothnia/spec"
	"github.com/bothnia/bothnia/store"
)

// The propagation lab: a node at each site, a remote-group rule, one
// member on each side so the group's set exists on both nodes.
const propagationYAML = `
fabric: {name: prop, cidr: 10.101.0.0/16}
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
      - {name: k0, node: knox-c1, ip: 10.101.128.10, mac: "fa:16:3e:80:00:0a", security_groups: [rg]}
      - {name: e0, node: epouta-c1, ip: 10.101.0.10, mac: "fa:16:3e:00:00:0a", security_groups: [rg]}
`

// Propagation measures, in a lab with etcd and agents, the time from a
// store write (a port created or deleted at Knox) to its address being
// added to or removed from the remote group's set on the ePouta node, as
// the kernel reports it (nftables' own change events, no polling); then
// the time for a Knox agent to converge bulk ports, and its CPU and memory
// with them.
func Propagation(w io.Writer, prefix string, n int, bulk int) error {
	l, err := lab.New(prefix)
	if err != nil {
		return err
	}
	l.Agents = true
	l.Resync = 10 * time.Second // as on a real host: the read-back of 10,000 ports is not free
	s, err := spec.Parse([]byte(propagationYAML))
	if err != nil {
		return err
	}
	defer func() {
		if os.Getenv("BOTHNIA_BENCH_KEEP") == "" {
			_, _ = l.Down()
		}
	}()
	if _, err := l.Up(s, []byte(propagationYAML)); err != nil {
		return fmt.Errorf("lab up: %w", err)
	}
	cli, err := store.Connect(store.ClientConfig{Endpoints: []string{l.EtcdURL()}})
	if err != nil {
		return err
	}
	defer cli.Close()
	events, stop, err := elementEvents(l.NodeNS("epouta-c1"))
	if err != nil {
		return err
	}
	defer stop()
	ctx := context.Background()
	var adds, dels []time.Duration
	for i := 0; i < n; i++ {
		ip := knoxAddr(i)
		key := store.PortKey("mgmt", "p"+strconv.Itoa(i))
		b, _ := yaml.Marshal(&spec.VM{Name: "p" + strconv.Itoa(i), Node: "knox-c1", IP: ip.String(), MAC: mac(i), SecurityGroups: []string{"rg"}})
		t0 := time.Now()
		if _, err := cli.Put(ctx, key, string(b)); err != nil {
			return err
		}
		d, err := waitElem(events, ip, true, t0)
		if err != nil {
			return fmt.Errorf("port %d added: %w", i, err)
		}
		adds = append(adds, d)
		t0 = time.Now()
		if _, err := cli.Delete(ctx, key); err != nil {
			return err
		}
		if d, err = waitElem(events, ip, false, t0); err != nil {
			return fmt.Errorf("port %d deleted: %w", i, err)
		}
		dels = append(dels, d)
	}
	fmt.Fprintf(w, "store write -> set element on the other site's node (%d creations, %d deletions)\n", len(adds), len(dels))
	fmt.Fprintf(w, "%-10s %10s %10s %10s\n", "change", "p50", "p99", "max")
	for _, r := range []struct {
		name string
		ds   []time.Duration
	}{{"create", adds}, {"delete", dels}} {
		p50, p99, mx := quantiles(r.ds)
		fmt.Fprintf(w, "%-10s %10s %10s %10s\n", r.name, p50.Round(10*time.Microsecond), p99.Round(10*time.Microsecond), mx.Round(10*time.Microsecond))
	}
	if bulk > 0 {
		// The kernel builds a change event for every element of every
		// transaction, in every namespace, as long as anyone on the host
		// listens to nftables' events (the listener bitmap is one per
		// netlink protocol, not per namespace): with this monitor open, a
		// starting agent's first programming of 10,000 ports took 1.6 to
		// 1.9 times as long. What follows is not measured by events.
		stop()
		return bulkPorts(w, l, cli, bulk)
	}
	return nil
}

// bulkPorts writes ports onto the Knox node in one go and reports how long
// its agent takes to converge them, and its CPU time and memory after.
func bulkPorts(w io.Writer, l *lab.Lab, cli *clientv3.Client, n int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pid, err := pidOf(l, "agent-knox-c1")
	if err != nil {
		return err
	}
	cpu0 := cpuTime(pid)
	var ops []clientv3.Op
	var rev int64
	t0 := time.Now()
	for i := 0; i < n; i++ {
		b, _ := yaml.Marshal(&spec.VM{Name: "b" + strconv.Itoa(i), Node: "knox-c1", IP: knoxAddr(1000 + i).String(), MAC: mac(1000 + i), SecurityGroups: []string{"rg"}})
		ops = append(ops, clientv3.OpPut(store.PortKey("mgmt", "b"+strconv.Itoa(i)), string(b)))
		if len(ops) == 100 || i == n-1 {
			resp, err := cli.Txn(ctx).Then(ops...).Commit()
			if err != nil {
				return err
			}
			rev, ops = resp.Header.Revision, nil
		}
	}
	written := time.Since(t0)
	for {
		st, err := agentStatus(ctx, cli, "knox-c1")
		if err == nil && st.Ready && st.Revision >= rev && st.Ports >= n {
			break
		}
		if ctx.Err() != nil {
			return fmt.Errorf("the knox agent did not converge %d ports", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	took := time.Since(t0)
	fmt.Fprintf(w, "\n%d ports written to the store at once (%d transactions of 100, written in %s): the node's agent converged in %s, %s after the last write\n",
		n, (n+99)/100, written.Round(time.Millisecond), took.Round(time.Millisecond), (took - written).Round(time.Millisecond))
	fmt.Fprintf(w, "agent on knox-c1 with %d ports: CPU %s for the bulk change, resident memory %s\n", n+1, (cpuTime(pid) - cpu0).Round(time.Millisecond), rss(pid))
	// The restart is timed on a quiet machine: the other site's agent
	// converges the same 10,000 members first, then pauses.
	for {
		st, err := agentStatus(ctx, cli, "epouta-c1")
		if err == nil && st.Ready && st.Revision >= rev {
			break
		}
		if ctx.Err() != nil {
			return fmt.Errorf("the epouta agent did not converge the %d ports", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// On a real host the other site's agent runs elsewhere; here it
	// shares the two cores, and its read-back of 10,000 members every
	// 10 s would land in the middle of the measure: it is paused.
	epid, err := pidOf(l, "agent-epouta-c1")
	if err != nil {
		return err
	}
	if err := syscall.Kill(epid, syscall.SIGSTOP); err != nil {
		return err
	}
	defer func() { _ = syscall.Kill(epid, syscall.SIGCONT) }()
	time.Sleep(time.Second)
	var starts []time.Duration
	for i := 0; i < restarts; i++ {
		d, p, err := restartAgent(l, cli, pid, n, rev)
		if err != nil {
			return err
		}
		starts, pid = append(starts, d), p
	}
	stopProcess(pid)
	med, _, _ := quantiles(starts)
	fmt.Fprintf(w, "a starting agent with %d ports and empty firewall tables: converged in %s (median of %d restarts: %s; process start to ready, store read included)\n",
		n+1, med.Round(time.Millisecond), restarts, roundAll(starts))
	return nil
}

// stopProcess ends a process with SIGTERM and waits until it is gone.
func stopProcess(pid int) {
	if syscall.Kill(pid, syscall.SIGTERM) != nil {
		return
	}
	for syscall.Kill(pid, 0) == nil {
		time.Sleep(50 * time.Millisecond)
	}
}

// restarts is how many times a starting agent is timed.
const restarts = 3

// restartAgent stops the Knox node's agent, deletes its firewall tables
// (so nothing is left to adopt), starts a new agent as the lab does, and
// times it from its start until it reports the node converged: the full
// programming of n ports by a starting agent, store read included. It
// returns that time and the new agent's pid; the agent keeps running (the
// lab's Down stops it). With BOTHNIA_BENCH_PROFILE=DIR the new agent
// writes a CPU profile there; its log is the lab's (kept with
// BOTHNIA_BENCH_KEEP=1).
func restartAgent(l *lab.Lab, cli *clientv3.Client, pid, n int, rev int64) (time.Duration, int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stopProcess(pid)
	ns := l.NodeNS("knox-c1")
	for _, t := range []string{"bridge bothnia-l2", "inet bothnia-fw"} {
		if out, err := exec.Command("ip", "netns", "exec", ns, "nft", "delete table "+t).CombinedOutput(); err != nil {
			return 0, 0, fmt.Errorf("bench: delete %s: %v: %s", t, err, out)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return 0, 0, err
	}
	cmd := exec.Command("nsenter", "--net="+filepath.Join(namespace.Dir, ns), "--", exe, "agent", "--node", "knox-c1",
		"--etcd-endpoints", l.EtcdURL(), "--ns-prefix", l.SubPrefix("knox-c1"), "--listen", "", "--resync", "10s")
	if d := os.Getenv("BOTHNIA_BENCH_PROFILE"); d != "" {
		cmd.Args = append(cmd.Args, "--cpuprofile", d+"/start.prof")
	}
	logf, err := os.OpenFile(l.ServiceLog("agent-knox-c1-restarted"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return 0, 0, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	go func() { _ = cmd.Wait() }()
	for {
		st, err := agentStatus(ctx, cli, "knox-c1")
		if err == nil && st.Time.After(t0) && st.Ready && st.Revision >= rev && st.Ports >= n {
			break
		}
		if ctx.Err() != nil {
			_ = cmd.Process.Kill()
			return 0, 0, fmt.Errorf("the restarted knox agent did not converge %d ports", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(t0), cmd.Process.Pid, nil
}

func knoxAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 101, byte(130 + i/250), byte(i%250 + 1)})
}

func mac(i int) string {
	return fmt.Sprintf("fa:16:3e:%02x:%02x:%02x", 0x90+i>>16&0xf, i>>8&0xff, i&0xff)
}

// elementEvents reports the addresses added to (true) and removed from
// (false) any set of the node's nftables, as the kernel announces them.
func elementEvents(ns string) (chan elemEvent, func(), error) {
	h, err := namespace.Open(ns)
	if err != nil {
		return nil, nil, err
	}
	c, err := nftables.New(nftables.WithNetNSFd(int(h)))
	if err != nil {
		h.Close()
		return nil, nil, err
	}
	// Every object: the library hands events over on the transaction's
	// closing generation message, which an elements-only filter drops.
	mon := nftables.NewMonitor(nftables.WithMonitorObject(nftables.MonitorObjectAny))
	evs, err := c.AddMonitor(mon)
	if err != nil {
		h.Close()
		return nil, nil, err
	}
	out := make(chan elemEvent, 4096)
	go func() {
		for ev := range evs {
			now := time.Now()
			els, ok := ev.Data.([]nftables.SetElement)
			if !ok {
				continue
			}
			for _, e := range els {
				if a, ok := netip.AddrFromSlice(e.Key); ok && len(e.Key) == 4 && !e.IntervalEnd {
					out <- elemEvent{a, ev.Type == nftables.MonitorEventTypeNewSetElem, now}
				}
			}
		}
		close(out)
	}()
	return out, func() { mon.Close(); h.Close() }, nil
}

type elemEvent struct {
	addr  netip.Addr
	added bool
	at    time.Time
}

func waitElem(evs chan elemEvent, a netip.Addr, added bool, t0 time.Time) (time.Duration, error) {
	deadline := time.After(5 * time.Second)
	for {
		select {
		case e, ok := <-evs:
			if !ok {
				return 0, fmt.Errorf("the nftables monitor stopped")
			}
			if e.addr == a && e.added == added {
				return e.at.Sub(t0), nil
			}
		case <-deadline:
			return 0, fmt.Errorf("%s never appeared on the other site's node within 5 s", a)
		}
	}
}

func roundAll(ds []time.Duration) string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Round(time.Millisecond).String())
	}
	return strings.Join(out, ", ")
}

func quantiles(ds []time.Duration) (p50, p99, mx time.Duration) {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return
	}
	at := func(q float64) time.Duration { return s[min(len(s)-1, int(q*float64(len(s))))] }
	return at(0.5), at(0.99), s[len(s)-1]
}

// agentStatus is what a node's agent last reported into the store.
func agentStatus(ctx context.Context, cli *clientv3.Client, node string) (agent.Status, error) {
	var st agent.Status
	resp, err := cli.Get(ctx, store.StatusKey(node))
	if err != nil || len(resp.Kvs) == 0 {
		return st, fmt.Errorf("no status of %s", node)
	}
	return st, json.Unmarshal(resp.Kvs[0].Value, &st)
}

func pidOf(l *lab.Lab, service string) (int, error) {
	b, err := os.ReadFile(filepath.Join(lab.StateDir, l.Prefix, service+".pid"))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// cpuTime is a process's user and system time.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+s) * time.Second / 100 // USER_HZ
}

func rss(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}
