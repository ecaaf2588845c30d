package bench

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/bothnia/bothnia/namespace"
)

const dnsNames = 1000

// dnsSpec is a fabric whose DNS knows dnsNames VMs and forwards to a
// resolver on the server namespace's loopback.
func dnsSpec() string {
	var b strings.Builder
	b.WriteString(`fabric: {name: bench, cidr: 10.101.0.0/16, domain: fabric.test}
sites:
  knox:
    cidr: 10.101.128.0/17
    pools: [10.101.128.1-10.101.255.254]
    dhcp: {address: 10.101.128.0, node: n1}
    nodes: [{name: n1, role: compute, underlay: 172.30.0.1}]
link: {mode: vxlan}
dns: {address: 10.101.128.0, forwarders: ["127.0.0.1:5353"]}
networks:
  - name: net
    segment: 100
    vms:
`)
	a := netip.MustParseAddr("10.101.129.1")
	for i := 1; i <= dnsNames; i++ {
		fmt.Fprintf(&b, "      - {name: vm%d, node: n1, ip: %s, mac: \"fa:16:3e:01:%02x:%02x\"}\n", i, a, i>>8, i&0xff)
		a = a.Next()
	}
	return b.String()
}

// DNS measures queries per second, authoritative (the fabric's VM names)
// and cached (outside names, after a warm-up), for bothnia and dnsmasq,
// with dnsperf as the load.
func DNS(w io.Writer, prefix string, secs int, generator string) error {
	gen, ok := dnsGenerators[generator]
	if !ok {
		return fmt.Errorf("bench: no DNS load generator %q; use bothnia (batched, of this binary) or dnsperf", generator)
	}
	srv, cli, cleanup, err := pair(prefix, "10.101.128.0/16", "10.101.200.1/16")
	if err != nil {
		return err
	}
	defer cleanup()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	specFile, auth, cached := filepath.Join(dir, "fabric.yaml"), filepath.Join(dir, "auth.txt"), filepath.Join(dir, "cached.txt")
	var a, c strings.Builder
	for i := 1; i <= dnsNames; i++ {
		fmt.Fprintf(&a, "vm%d.fabric.test A\n", i)
		fmt.Fprintf(&c, "ext%d.example.org A\n", i)
	}
	for path, content := range map[string]string{specFile: dnsSpec(), auth: a.String(), cached: c.String()} {
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			return err
		}
	}
	stopUp, err := upstream(srv)
	if err != nil {
		return err
	}
	defer stopUp()

	exe, err := os.Executable()
	if err != nil {
		return err
	}
	// bothnia's DNS forwards, so it runs as a process inside the namespace.
	bn := exec.Command("ip", "netns", "exec", srv, exe, "dns", "--spec", specFile)
	if err := bn.Start(); err != nil {
		return err
	}
	ready := func() error { return waitDNS(cli, "10.101.128.0") }
	if err := ready(); err != nil {
		_ = bn.Process.Kill()
		return err
	}
	fmt.Fprintf(w, "rate search (each step one run of %s):\n", generator)
	bAuth, bCached, err := dnsRuns(w, "bothnia", srv, cli, bn.Process.Pid, auth, cached, secs, gen)
	_ = bn.Process.Signal(syscall.SIGTERM)
	_ = bn.Wait()
	if err != nil {
		return err
	}

	pid := filepath.Join(dir, "dnsmasq.pid")
	args := []string{"netns", "exec", srv, "dnsmasq", "--interface=ds0", "--bind-interfaces", "--no-resolv", "--no-hosts",
		"--cache-size=10000", "--server=127.0.0.1#5353", "--log-facility=/dev/null", "--pid-file=" + pid}
	addr := netip.MustParseAddr("10.101.129.1")
	for i := 1; i <= dnsNames; i++ {
		args = append(args, fmt.Sprintf("--host-record=vm%d.fabric.test,%s", i, addr))
		addr = addr.Next()
	}
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("bench: dnsmasq: %w: %s", err, out)
	}
	defer killPidFile(pid)
	if err := ready(); err != nil {
		return err
	}
	dAuth, dCached, err := dnsRuns(w, "dnsmasq", srv, cli, pidFrom(pid), auth, cached, secs, gen)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "DNS: the highest offered rate answered with under 1%% lost (%s, 8 sockets, %d s per step, %d names),\nand the latency at that rate\n", generator, secs, dnsNames)
	fmt.Fprintf(w, "%-14s %-8s %10s %10s %7s %10s %10s\n", "answers", "server", "offered/s", "answered/s", "lost", "p50", "p99")
	for _, r := range []struct {
		kind string
		b, d dnsStep
	}{{"authoritative", bAuth, dAuth}, {"cached", bCached, dCached}} {
		for _, x := range []struct {
			name string
			st   dnsStep
		}{{"bothnia", r.b}, {"dnsmasq", r.d}} {
			fmt.Fprintf(w, "%-14s %-8s %10d %10.0f %6.2f%% %10s %10s\n", r.kind, x.name, x.st.offered, x.st.qps, x.st.lostPct,
				x.st.p50.Round(time.Microsecond), x.st.p99.Round(time.Microsecond))
		}
		ratio := "-"
		if r.d.qps > 0 && r.b.qps > 0 {
			ratio = fmt.Sprintf("%.2fx", r.b.qps/r.d.qps)
		}
		fmt.Fprintf(w, "%-14s %-8s %10s %10s\n", r.kind, "ratio", "", ratio)
	}
	if bAuth.offered == dnsRates[len(dnsRates)-1] || dAuth.offered == dnsRates[len(dnsRates)-1] {
		fmt.Fprintln(w, "a server sustained the highest rate the search offers: that figure is a lower bound")
	}
	return nil
}

// upstream answers every A query with one address, from the server
// namespace's loopback, standing in for the resolvers behind the router.
func upstream(ns string) (func(), error) {
	var pc net.PacketConn
	if err := namespace.Do(ns, func() error {
		var err error
		pc, err = net.ListenPacket("udp4", "127.0.0.1:5353")
		return err
	}); err != nil {
		return nil, err
	}
	h := mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		m := new(mdns.Msg)
		m.SetReply(r)
		if len(r.Question) == 1 && r.Question[0].Qtype == mdns.TypeA {
			m.Answer = append(m.Answer, &mdns.A{Hdr: mdns.RR_Header{Name: r.Question[0].Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 3600},
				A: net.IPv4(203, 0, 113, 1)})
		}
		_ = w.WriteMsg(m)
	})
	s := &mdns.Server{PacketConn: pc, Handler: h}
	go func() { _ = s.ActivateAndServe() }()
	return func() { _ = s.Shutdown() }, nil
}

func waitDNS(cli, server string) error {
	m := new(mdns.Msg)
	m.SetQuestion("vm1.fabric.test.", mdns.TypeA)
	var err error
	for i := 0; i < 50; i++ {
		err = namespace.Do(cli, func() error {
			c := &mdns.Client{Timeout: 200 * time.Millisecond}
			r, _, err := c.Exchange(m, net.JoinHostPort(server, "53"))
			if err == nil && len(r.Answer) == 0 {
				err = fmt.Errorf("no answer for vm1.fabric.test")
			}
			return err
		})
		if err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("bench: DNS server not answering: %w", err)
}

var qpsRE = regexp.MustCompile(`Queries per second:\s+([\d.]+)`)

// dnsRuns finds the highest rate for authoritative answers, then warms the
// cache with one pass over the outside names and does the same for cached
// answers.
func dnsRuns(w io.Writer, server, srv, cli string, pid int, auth, cached string, secs int, gen dnsGenerator) (dnsStep, dnsStep, error) {
	a, err := maxRate(w, server+" authoritative", srv, cli, pid, auth, secs, gen)
	if err != nil {
		return a, dnsStep{}, err
	}
	if _, err := gen(cli, cached, 2, dnsRates[0], false, nil); err != nil {
		return a, dnsStep{}, err
	}
	c, err := maxRate(w, server+" cached", srv, cli, pid, cached, secs, gen)
	return a, c, err
}
