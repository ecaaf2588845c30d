// Package bench measures bothnia against its baselines in one run on one
// machine and prints ratios, never absolute targets: timings on shared
// machines are noisy, ratios measured side by side are not.
package bench

import (
	"fmt"
	"io"
	"net/netip"
	"sort"
	"time"

	"github.com/bothnia/bothnia/firewall"
	"github.com/bothnia/bothnia/namespace"
	"github.com/bothnia/bothnia/spec"
)

// fabric is a synthetic node with n secured ports in one group whose rules
// look like the example's (a prefix rule, a remote-group rule, ICMP, SSH).
func fabric(n int) (*firewall.Fabric, error) {
	s := &spec.Spec{
		Fabric: spec.Fabric{Name: "bench", CIDR: "10.101.0.0/16"},
		Sites: map[string]*spec.Site{
			"knox": {CIDR: "10.101.128.0/17", Pools: []string{"10.101.128.1-10.101.255.254"},
				Nodes: []*spec.Node{{Name: "n1", Role: "compute", Underlay: "172.30.0.1"}}},
		},
		Link: spec.Link{Mode: "vxlan"},
		SecurityGroups: []*spec.SecurityGroup{{Name: "web", Rules: []*spec.SGRule{
			{Direction: "ingress", Protocol: "icmp", RemoteIPPrefix: "10.101.0.0/16"},
			{Direction: "ingress", Protocol: "tcp", PortRange: "22", RemoteIPPrefix: "10.101.0.0/16"},
			{Direction: "ingress", Protocol: "tcp", PortRange: "7000", RemoteGroup: "web"},
			{Direction: "ingress", Protocol: "udp", PortRange: "5000-5100", RemoteGroup: "web"},
		}}},
	}
	nw := &spec.Network{Name: "net", Segment: 100}
	base := netip.MustParseAddr("10.101.128.1")
	a := base
	for i := 0; i < n; i++ {
		nw.VMs = append(nw.VMs, &spec.VM{Name: fmt.Sprintf("vm%d", i), Node: "n1", IP: a.String(),
			MAC: fmt.Sprintf("fa:16:3e:%02x:%02x:%02x", i>>16&0xff, i>>8&0xff, i&0xff), SecurityGroups: []string{"web"}})
		a = a.Next()
	}
	s.Networks = []*spec.Network{nw}
	b, err := specYAML(s)
	if err != nil {
		return nil, err
	}
	ps, err := spec.Parse(b)
	if err != nil {
		return nil, err
	}
	return firewall.Compile(ps)
}

func median(ds []time.Duration) time.Duration {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[len(ds)/2]
}

// Firewall prints, per size, the initial programming and the cost of
// adding one port with nftables (incremental), iptables-restore --noflush
// (diff) and a full iptables-restore of the Neutron layout.
func Firewall(w io.Writer, prefix string, sizes []int, repeat int, withIPTables bool) error {
	fmt.Fprintf(w, "%-7s %-22s %12s %12s %12s\n", "ports", "measure", "nftables", "ipt-diff", "ipt-full")
	for _, n := range sizes {
		small, err := fabric(n)
		if err != nil {
			return err
		}
		big, err := fabric(n + 1)
		if err != nil {
			return err
		}
		var extra *firewall.Port
		for i := range big.Ports {
			if small.Port(big.Ports[i].VM) == nil {
				extra = &big.Ports[i]
			}
		}
		r, err := measure(prefix, small, big, extra, repeat, withIPTables)
		if err != nil {
			return fmt.Errorf("%d ports: %w", n, err)
		}
		ipt := func(d time.Duration) string {
			if !withIPTables {
				return "-"
			}
			return d.Round(time.Microsecond).String()
		}
		fmt.Fprintf(w, "%-7d %-22s %12s %12s %12s\n", n, "initial programming", r.nftInit.Round(time.Microsecond), ipt(r.iptInit), "-")
		fmt.Fprintf(w, "%-7d %-22s %12s %12s %12s\n", n, "add one port", r.nftAdd.Round(time.Microsecond), ipt(r.iptDiff), ipt(r.iptFull))
		if withIPTables {
			fmt.Fprintf(w, "%-7d %-22s %12s %11.0fx %11.0fx\n", n, "ratio to nftables add", "1x",
				float64(r.iptDiff)/float64(r.nftAdd), float64(r.iptFull)/float64(r.nftAdd))
		}
	}
	return nil
}

type result struct{ nftInit, nftAdd, iptInit, iptDiff, iptFull time.Duration }

func measure(prefix string, small, big *firewall.Fabric, extra *firewall.Port, repeat int, withIPTables bool) (result, error) {
	var r result
	ns := prefix + "-bench"
	if _, err := namespace.Create(ns); err != nil {
		return r, err
	}
	defer namespace.Delete(ns)
	x, err := firewall.NewNFT(ns)
	if err != nil {
		return r, err
	}
	defer x.Close()
	t0 := time.Now()
	if _, err := x.Program(small, "n1"); err != nil {
		return r, err
	}
	r.nftInit = time.Since(t0)
	var adds []time.Duration
	for i := 0; i < repeat; i++ {
		t0 := time.Now()
		if _, err := x.AddPort(big, extra); err != nil {
			return r, err
		}
		adds = append(adds, time.Since(t0))
		if _, err := x.RemovePort(big, extra); err != nil {
			return r, err
		}
	}
	r.nftAdd = median(adds)
	if err := x.Remove(); err != nil {
		return r, err
	}
	if !withIPTables {
		return r, nil
	}
	// iptables in a namespace of its own, so that nftables' tables do not
	// weigh on iptables-nft's reads.
	ins := prefix + "-benchipt"
	if _, err := namespace.Create(ins); err != nil {
		return r, err
	}
	defer namespace.Delete(ins)
	ipt := firewall.NewIPT(ins, nil)
	t0 = time.Now()
	if _, err := ipt.Program(small, "n1"); err != nil {
		return r, err
	}
	r.iptInit = time.Since(t0)
	var diffs, fulls []time.Duration
	for i := 0; i < repeat; i++ {
		t0 := time.Now()
		if _, err := ipt.Program(big, "n1"); err != nil {
			return r, err
		}
		diffs = append(diffs, time.Since(t0))
		if _, err := ipt.Program(small, "n1"); err != nil {
			return r, err
		}
		t0 = time.Now()
		if _, err := ipt.ProgramFull(big, "n1"); err != nil {
			return r, err
		}
		fulls = append(fulls, time.Since(t0))
		if _, err := ipt.Program(small, "n1"); err != nil {
			return r, err
		}
	}
	r.iptDiff, r.iptFull = median(diffs), median(fulls)
	return r, nil
}
