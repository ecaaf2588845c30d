package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/bothnia/bothnia/firewall"
	"github.com/bothnia/bothnia/lab"
	"github.com/bothnia/bothnia/namespace"
	"github.com/bothnia/bothnia/spec"
)

// The datapath lab: two VMs on two nodes of one site, one network, a
// group that admits TCP from its members.
const datapathYAML = `
fabric: {name: dp, cidr: 10.101.0.0/16}
sites:
  knox:
    cidr: 10.101.128.0/17
    pools: [10.101.128.1-10.101.255.254]
    nodes:
      - {name: knox-c1, role: compute, underlay: 172.30.0.1}
      - {name: knox-c2, role: compute, underlay: 172.30.0.2}
link: {mode: vxlan}
security_groups:
  - name: dp
    rules:
      - {direction: ingress, protocol: tcp, remote_group: dp}
networks:
  - name: net
    segment: 400
    vms:
      - {name: a, node: knox-c1, ip: 10.101.128.10, mac: "fa:16:3e:80:00:0a", security_groups: [dp]}
      - {name: b, node: knox-c2, ip: 10.101.128.11, mac: "fa:16:3e:80:00:0b", security_groups: [dp]}
`

type datapathResult struct {
	gbits    float64 // median of the iperf3 runs
	p50, p99 time.Duration
}

// Datapath measures one TCP stream's throughput (iperf3, median of three)
// and request/response latency (p50/p99 of 1-byte exchanges) between two
// VMs on different nodes: with no firewall, and with the nftables and the
// iptables renderings with each number of other ports programmed on both
// nodes (ports without taps: their elements and rules are all there).
func Datapath(w io.Writer, prefix string, firewalls []string, sizes []int, secs int) error {
	if _, err := exec.LookPath("iperf3"); err != nil {
		return fmt.Errorf("bench: iperf3 is missing; run scripts/install-bench-deps.sh")
	}
	type row struct {
		renderer string
		ports    int
		r        datapathResult
	}
	var rows []row
	for _, renderer := range firewalls {
		s, err := spec.Parse([]byte(datapathYAML))
		if err != nil {
			return err
		}
		switch renderer {
		case "none":
			off := false
			for _, vm := range s.Networks[0].VMs {
				vm.PortSecurity, vm.SecurityGroups = &off, nil
			}
		default:
			s.Firewall = renderer
		}
		l, err := lab.New(prefix)
		if err != nil {
			return err
		}
		l.Agents = false
		if _, err := l.Up(s, nil); err != nil {
			_, _ = l.Down()
			return fmt.Errorf("bench: lab up (%s): %w", renderer, err)
		}
		counts := sizes
		if renderer == "none" {
			counts = []int{0}
		}
		for _, n := range counts {
			if renderer != "none" {
				if err := programExtra(l, s, renderer, n); err != nil {
					_, _ = l.Down()
					return err
				}
			}
			r, err := measureDatapath(l, secs, fmt.Sprintf("%s-%d", renderer, n))
			if err != nil {
				_, _ = l.Down()
				return fmt.Errorf("bench: %s with %d ports: %w", renderer, n, err)
			}
			rows = append(rows, row{renderer, n, r})
			fmt.Fprintf(w, "  %-9s %6d ports: %6.2f Gbit/s, rr p50 %s p99 %s\n", renderer, n, r.gbits, r.p50, r.p99)
		}
		if _, err := l.Down(); err != nil {
			return err
		}
	}
	base := rows[0].r
	fmt.Fprintf(w, "\nTCP between two VMs on two nodes (iperf3, %d s, median of 3; rr: 1-byte request/response)\n", secs)
	fmt.Fprintf(w, "%-9s %7s %10s %10s %10s %10s\n", "firewall", "ports", "Gbit/s", "vs none", "rr p50", "rr p99")
	for _, r := range rows {
		ratio := "-"
		if base.gbits > 0 && r.r.gbits > 0 {
			ratio = fmt.Sprintf("%.2fx", r.r.gbits/base.gbits)
		}
		fmt.Fprintf(w, "%-9s %7d %10.2f %10s %10s %10s\n", r.renderer, r.ports, r.r.gbits, ratio, r.r.p50.Round(time.Microsecond), r.r.p99.Round(time.Microsecond))
	}
	return nil
}

// programExtra programs both nodes' firewalls with n other ports on each,
// through the renderer's own programmer, as an agent would.
func programExtra(l *lab.Lab, s *spec.Spec, renderer string, n int) error {
	b, err := yaml.Marshal(s)
	if err != nil {
		return err
	}
	big, err := spec.Parse(b)
	if err != nil {
		return err
	}
	nw := big.Networks[0]
	addr := netip.MustParseAddr("10.101.130.1")
	for i := 0; i < 2*n; i++ {
		node := "knox-c1"
		if i%2 == 1 {
			node = "knox-c2"
		}
		nw.VMs = append(nw.VMs, &spec.VM{Name: "x" + strconv.Itoa(i), Node: node, IP: addr.String(),
			MAC: fmt.Sprintf("fa:16:3e:%02x:%02x:%02x", 0x40|i>>16&0x3f, i>>8&0xff, i&0xff), SecurityGroups: []string{"dp"}})
		addr = addr.Next()
	}
	f, err := firewall.Compile(big)
	if err != nil {
		return err
	}
	for _, node := range []string{"knox-c1", "knox-c2"} {
		x, err := firewall.NewProgrammer(renderer, l.NodeNS(node))
		if err != nil {
			return err
		}
		_, err = x.Program(f, node)
		x.Close()
		if err != nil {
			return fmt.Errorf("bench: program %d ports on %s: %w", n, node, err)
		}
	}
	return nil
}

// measureDatapath runs iperf3 three times and the request/response
// exchanges. With BOTHNIA_BENCH_PERF=DIR the machine's CPUs are sampled
// (perf record -a -g) during the first iperf3 run, into DIR/NAME.data: where
// the cycles of one configuration go, to compare with another's.
func measureDatapath(l *lab.Lab, secs int, name string) (datapathResult, error) {
	var r datapathResult
	var runs []float64
	for i := 0; i < 3; i++ {
		srv := exec.Command("ip", "netns", "exec", l.VMNS("b"), "iperf3", "-s", "-1")
		if err := srv.Start(); err != nil {
			return r, err
		}
		time.Sleep(200 * time.Millisecond)
		var perf *exec.Cmd
		if dir := os.Getenv("BOTHNIA_BENCH_PERF"); dir != "" && i == 0 {
			perf = exec.Command("perf", "record", "-a", "-g", "-q", "-o", filepath.Join(dir, name+".data"), "--", "sleep", strconv.Itoa(secs))
			if err := perf.Start(); err != nil {
				return r, fmt.Errorf("bench: perf: %w", err)
			}
		}
		out, err := exec.Command("ip", "netns", "exec", l.VMNS("a"), "iperf3", "-c", "10.101.128.11", "-t", strconv.Itoa(secs), "-J").Output()
		_ = srv.Wait()
		if perf != nil {
			if perr := perf.Wait(); perr != nil {
				return r, fmt.Errorf("bench: perf record: %w", perr)
			}
		}
		if err != nil {
			return r, fmt.Errorf("iperf3: %v: %s", err, out)
		}
		var res struct {
			End struct {
				SumReceived struct {
					BitsPerSecond float64 `json:"bits_per_second"`
				} `json:"sum_received"`
			} `json:"end"`
		}
		if err := json.Unmarshal(out, &res); err != nil || res.End.SumReceived.BitsPerSecond == 0 {
			return r, fmt.Errorf("iperf3 reported no throughput: %v", err)
		}
		runs = append(runs, res.End.SumReceived.BitsPerSecond/1e9)
	}
	slices.Sort(runs)
	r.gbits = runs[1]
	var err error
	r.p50, r.p99, err = requestResponse(l, 5000)
	return r, err
}

// requestResponse times n one-byte exchanges over one TCP connection from
// a to b.
func requestResponse(l *lab.Lab, n int) (time.Duration, time.Duration, error) {
	var ln net.Listener
	if err := namespace.Do(l.VMNS("b"), func() error {
		var err error
		ln, err = net.Listen("tcp4", "10.101.128.11:7100")
		return err
	}); err != nil {
		return 0, 0, err
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 1)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}()
	var c net.Conn
	if err := namespace.Do(l.VMNS("a"), func() error {
		var err error
		c, err = net.DialTimeout("tcp4", "10.101.128.11:7100", 2*time.Second)
		return err
	}); err != nil {
		return 0, 0, err
	}
	defer c.Close()
	ds := make([]time.Duration, 0, n)
	buf := []byte{1}
	for i := 0; i < n; i++ {
		t0 := time.Now()
		if _, err := c.Write(buf); err != nil {
			return 0, 0, err
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return 0, 0, err
		}
		ds = append(ds, time.Since(t0))
	}
	slices.Sort(ds)
	return ds[len(ds)/2], ds[len(ds)*99/100], nil
}
