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

// fabric is a synthetic node with n secured ports in one group with the
// rules peers/neutron_fw.py gives Neutron's driver: ICMP and all TCP from
// the fabric, anything from the group's members, IPv4 egress.
func fabric(n int) (*firewall.Fabric, error) {
	s := &spec.Spec{
		Fabric: spec.Fabric{Name: "bench", CIDR: "10.101.0.0/16"},
		Sites: map[string]*spec.Site{
			"knox": {CIDR: "10.101.128.0/17", Pools: []string{"10.101.128.1-10.101.255.254"},
				Nodes: []*spec.Node{{Name: "n1", Role: "compute", Underlay: "172.30.0.1"}}},
		},
		Link: spec.Link{Mode: "vxlan"},
		SecurityGroups: []*spec.SecurityGroup{{Name: "web", NoDefaultEgress: true, Rules: []*spec.SGRule{
			{Direction: "ingress", Protocol: "icmp", RemoteIPPrefix: "10.101.0.0/16"},
			{Direction: "ingress", Protocol: "tcp", PortRange: "1-65535", RemoteIPPrefix: "10.101.0.0/16"},
			{Direction: "ingress", RemoteGroup: "web"},
			{Direction: "egress"},
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
// adding one port, timed the same way for every renderer: the node's whole
// firewall re-rendered and the difference written (what an agent does on
// every change). Beside them: a full iptables-restore of the Neutron
// layout, and Neutron's own IptablesFirewallDriver (python3-neutron, run
// by peers/neutron_fw.py in a namespace of its own) up to neutronMax ports.
func Firewall(w io.Writer, prefix string, sizes []int, repeat int, withIPTables bool, neutronMax int) error {
	var peer map[int]neutronResult
	if neutronMax > 0 {
		var err error
		if peer, err = runNeutron(prefix, sizes, neutronMax); err != nil {
			return err
		}
	}
	fmt.Fprintf(w, "%-7s %-24s %12s %12s %12s %12s\n", "ports", "measure", "nftables", "ipt-diff", "ipt-full", "neutron")
	for _, n := range sizes {
		small, err := fabric(n)
		if err != nil {
			return err
		}
		big, err := fabric(n + 1)
		if err != nil {
			return err
		}
		r, err := measure(prefix, small, big, repeat, withIPTables)
		if err != nil {
			return fmt.Errorf("%d ports: %w", n, err)
		}
		ipt := func(d time.Duration) string {
			if !withIPTables {
				return "-"
			}
			return d.Round(time.Microsecond).String()
		}
		nr, haveNeutron := peer[n]
		neu := func(d time.Duration) string {
			if !haveNeutron {
				return "-"
			}
			return d.Round(time.Millisecond).String()
		}
		ratio := func(peer, ours time.Duration, ok bool) string {
			if !ok || peer <= 0 || ours <= 0 {
				return "-"
			}
			return fmt.Sprintf("%.1fx", float64(peer)/float64(ours))
		}
		fmt.Fprintf(w, "%-7d %-24s %12s %12s %12s %12s\n", n, "initial programming", r.nftInit.Round(time.Microsecond), ipt(r.iptInit), "-", neu(nr.initial))
		fmt.Fprintf(w, "%-7d %-24s %12s %12s %12s %12s\n", n, "  ratio to nftables", "1x", ratio(r.iptInit, r.nftInit, withIPTables), "-", ratio(nr.initial, r.nftInit, haveNeutron))
		fmt.Fprintf(w, "%-7d %-24s %12s %12s %12s %12s\n", n, "add one port", r.nftAdd.Round(time.Microsecond), ipt(r.iptDiff), ipt(r.iptFull), neu(nr.add))
		fmt.Fprintf(w, "%-7d %-24s %12s %12s %12s %12s\n", n, "  ratio to nftables", "1x", ratio(r.iptDiff, r.nftAdd, withIPTables), ratio(r.iptFull, r.nftAdd, withIPTables), ratio(nr.add, r.nftAdd, haveNeutron))
	}
	return nil
}

type result struct{ nftInit, nftAdd, iptInit, iptDiff, iptFull time.Duration }

func measure(prefix string, small, big *firewall.Fabric, repeat int, withIPTables bool) (result, error) {
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
		if _, err := x.Program(big, "n1"); err != nil {
			return r, err
		}
		adds = append(adds, time.Since(t0))
		if _, err := x.Program(small, "n1"); err != nil {
			return r, err
		}
	}
	r.nftAdd = median(adds)
	if _, err := x.Remove(); err != nil {
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
