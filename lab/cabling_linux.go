package lab

// What a real site already has, built for the lab: the underlay switches,
// the WAN between the sites, and the outside world behind the router.

import (
	"fmt"
	"net/netip"

	"github.com/bothnia/bothnia/check"
	"github.com/bothnia/bothnia/plan"
	"github.com/bothnia/bothnia/spec"
)

// cabling builds what a real site has before bothnia runs: the underlay
// between nodes and sites, the hypervisor's VM taps, the upstream network.
func (l *Lab) cabling(e *ensurer, s *spec.Spec, p *plan.Plan) error {
	sites := s.SiteNames()
	for _, sn := range sites {
		sw := l.SwitchNS(sn)
		if err := e.netns(sw); err != nil {
			return err
		}
		if err := e.bridge(sw, SwitchBr); err != nil {
			return err
		}
		if err := e.up(sw, SwitchBr); err != nil {
			return err
		}
		for i, n := range s.Sites[sn].Nodes {
			ns := l.NodeNS(n.Name)
			port := fmt.Sprintf("n%d", i)
			steps := []func() error{
				func() error { return e.netns(ns) },
				func() error { return e.veth(ns, UnderlayDev, sw, port, s.Link.UnderlayMTU, "") },
				func() error { return e.master(sw, port, SwitchBr) },
				func() error { return e.up(sw, port) },
				func() error { return e.addr(ns, UnderlayDev, n.Underlay+"/24") },
				func() error { return e.up(ns, UnderlayDev) },
			}
			if err := run(steps); err != nil {
				return err
			}
		}
	}
	// The inter-site link: a veth between neighbouring sites' switches,
	// shaped both ways to the spec's rate.
	for i := 0; i+1 < len(sites); i++ {
		a, b := l.SwitchNS(sites[i]), l.SwitchNS(sites[i+1])
		wan := fmt.Sprintf("wan%d", i)
		steps := []func() error{
			func() error { return e.veth(a, wan, b, wan, s.Link.UnderlayMTU, "") },
		}
		for _, sw := range []string{a, b} {
			sw := sw
			steps = append(steps,
				func() error { return e.master(sw, wan, SwitchBr) },
				func() error { return e.tbf(sw, wan, s.Link.RateMbit) },
				func() error { return e.up(sw, wan) })
		}
		if err := run(steps); err != nil {
			return err
		}
	}
	if r := s.Router; r != nil {
		if err := l.outside(e, s); err != nil {
			return err
		}
	}
	// The hypervisor's part: one namespace per VM, its eth0 paired with the
	// tap the plan plugs into the bridge. VMs the sites' DHCP servers serve
	// start unconfigured, at the kernel's MTU, and get the rest by DHCP;
	// the others are configured statically.
	dhcpVMs := DHCPVMs(s)
	for _, n := range p.Nodes {
		for _, port := range n.Ports {
			vm := l.VMNS(port.VM)
			if dhcpVMs[port.VM] {
				steps := []func() error{
					func() error { return e.netns(vm) },
					func() error { return e.veth(vm, VMDev, l.NodeNS(n.Name), port.Name, 0, port.MAC) },
					func() error { return e.up(vm, VMDev) },
				}
				if err := run(steps); err != nil {
					return err
				}
				continue
			}
			steps := []func() error{
				func() error { return e.netns(vm) },
				func() error { return e.veth(vm, VMDev, l.NodeNS(n.Name), port.Name, port.MTU, port.MAC) },
				func() error { return e.addr(vm, VMDev, port.IP) },
				func() error { return e.up(vm, VMDev) },
			}
			if port.Gateway != "" {
				gw := port.Gateway
				steps = append(steps, func() error { return e.route(vm, "0.0.0.0/0", gw, VMDev) })
			}
			if err := run(steps); err != nil {
				return err
			}
		}
	}
	return nil
}

// outside is the world behind the router node's mm: the node forwards to
// it by default route, and it holds every allowlisted endpoint and the
// lab's blocked ones on its loopback.
func (l *Lab) outside(e *ensurer, s *spec.Spec) error {
	r := s.Router
	if r.External.Device != "" {
		return l.sharedOutside(e, s)
	}
	node, out := l.NodeNS(r.Node), l.OutsideNS()
	steps := []func() error{
		func() error { return e.netns(node) },
		func() error { return e.netns(out) },
		func() error { return e.veth(node, UpstreamDev, out, OutsideDev, 0, "") },
		func() error { return e.addr(node, UpstreamDev, upstreamNode.String()) },
		func() error { return e.addr(out, OutsideDev, upstreamOutside.String()) },
		func() error { return e.up(node, UpstreamDev) },
		func() error { return e.up(out, OutsideDev) },
		func() error { return e.sysctl(node, "net.ipv4.ip_forward", "1") },
		func() error { return e.route(node, "0.0.0.0/0", upstreamOutside.Addr().String(), UpstreamDev) },
		func() error { return e.route(out, r.External.CIDR, upstreamNode.Addr().String(), OutsideDev) },
	}
	for _, ep := range Endpoints(s) {
		a := ep.Addr.String() + "/32"
		steps = append(steps, func() error { return e.addr(out, "lo", a) })
	}
	return run(steps)
}

// sharedOutside is the external segment router replicas share: a switch
// with each replica node's external device and the outside, which is the
// upstream (the spec's external host address) and holds the endpoints.
func (l *Lab) sharedOutside(e *ensurer, s *spec.Spec) error {
	r := s.Router
	sw, out := l.ExternalSwitchNS(), l.OutsideNS()
	ext := netip.MustParsePrefix(r.External.CIDR)
	steps := []func() error{
		func() error { return e.netns(sw) },
		func() error { return e.bridge(sw, SwitchBr) },
		func() error { return e.up(sw, SwitchBr) },
		func() error { return e.netns(out) },
		func() error { return e.veth(out, OutsideDev, sw, "out", 0, "") },
		func() error { return e.master(sw, "out", SwitchBr) },
		func() error { return e.up(sw, "out") },
		func() error { return e.addr(out, OutsideDev, fmt.Sprintf("%s/%d", r.External.Host, ext.Bits())) },
		func() error { return e.up(out, OutsideDev) },
	}
	for i, n := range r.Replicas() {
		node, port := l.NodeNS(n), fmt.Sprintf("r%d", i)
		steps = append(steps,
			func() error { return e.netns(node) },
			func() error { return e.veth(node, r.External.Device, sw, port, 0, "") },
			func() error { return e.master(sw, port, SwitchBr) },
			func() error { return e.up(sw, port) },
			func() error { return e.up(node, r.External.Device) })
	}
	for _, ep := range Endpoints(s) {
		a := ep.Addr.String() + "/32"
		steps = append(steps, func() error { return e.addr(out, "lo", a) })
	}
	return run(steps)
}

// Endpoints lists the outside's addresses, as check's endpoints: the
// first address of every allowlisted prefix and of every blocked one.
func Endpoints(s *spec.Spec) []check.Endpoint {
	var out []check.Endpoint
	if s.Router != nil {
		for _, a := range s.Router.Allow {
			out = append(out, check.Endpoint{Name: a.Name, Addr: spec.AllowedPrefix(a.Prefix).Addr(), Allowed: true})
		}
	}
	for _, b := range s.Lab.Blocked {
		out = append(out, check.Endpoint{Name: b.Name, Addr: spec.AllowedPrefix(b.Prefix).Addr()})
	}
	return out
}
