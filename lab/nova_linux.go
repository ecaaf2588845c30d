package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/bothnia/bothnia/internal/devcloud"
	"github.com/bothnia/bothnia/openstack"
	"github.com/bothnia/bothnia/plan"
	"github.com/bothnia/bothnia/spec"
)

// What a real site has before its cloud runs, for a foreign node: the
// physical interface its agents map (devcloud.PhysDev) and, per network,
// the VLAN sub-interface Neutron bridges (em1.<segment>). This kernel has
// no 802.1Q, so the sub-interface is one end of a veth whose other end sits
// in a lab-owned bridge with the segment's VXLAN device over the underlay
// (the lab's stand-in for the tagged fibre, as the managed nodes' uplinks
// are). The linuxbridge agent finds em1.<segment> already there and uses
// it as it would use the VLAN device it creates on a real host.

func trunkBridge(seg int) string { return fmt.Sprintf("tk%d", seg) }
func trunkPort(seg int) string   { return fmt.Sprintf("tkp%d", seg) }
func subIface(seg int) string    { return plan.VLANName(devcloud.PhysDev, seg) }

// foreignCabling builds the physical side of every foreign node.
func (l *Lab) foreignCabling(e *ensurer, ls *spec.Spec, p *plan.Plan) error {
	for _, n := range p.Nodes {
		if !n.Foreign {
			continue
		}
		var tunnels []plan.Link
		for _, link := range n.Namespace(plan.HostNS).Links {
			if link.Kind == plan.VXLAN {
				tunnels = append(tunnels, link)
			}
		}
		if err := neutronCabling(e, l.NodeNS(n.Name), tunnels); err != nil {
			return err
		}
	}
	return nil
}

// neutronCabling gives a node namespace em1 and, per VXLAN tunnel (one
// per segment), em1.<segment> as one end of a veth into a lab-owned
// bridge with the tunnel.
func neutronCabling(e *ensurer, ns string, tunnels []plan.Link) error {
	if err := e.veth(ns, devcloud.PhysDev, ns, devcloud.PhysDev+"p", 0, ""); err != nil {
		return err
	}
	for _, dev := range []string{devcloud.PhysDev, devcloud.PhysDev + "p"} {
		if err := e.up(ns, dev); err != nil {
			return err
		}
	}
	for _, link := range tunnels {
		seg := link.VXLAN.VNI
		br, tk := trunkBridge(seg), trunkPort(seg)
		steps := []func() error{
			func() error { return e.bridge(ns, br) },
			func() error { return e.vxlan(ns, link) },
			func() error { return e.master(ns, link.Name, br) },
			func() error { return e.veth(ns, tk, ns, subIface(seg), link.MTU, "") },
			func() error { return e.master(ns, tk, br) },
		}
		for _, dev := range []string{br, link.Name, tk, subIface(seg)} {
			steps = append(steps, func() error { return e.up(ns, dev) })
		}
		if err := run(steps); err != nil {
			return err
		}
	}
	return nil
}

// vxlan makes a VXLAN device for a tunnel the plan describes, with its
// flood list; it learns the rest.
func (e *ensurer) vxlan(ns string, want plan.Link) error {
	h, err := e.handle(ns)
	if err != nil {
		return err
	}
	l, err := h.LinkByName(want.Name)
	if err != nil {
		attrs := netlink.NewLinkAttrs()
		attrs.Name, attrs.MTU = want.Name, want.MTU
		// It stands for a switched VLAN, which learns where a MAC is
		// (a router replica's takeover moves it there by its
		// gratuitous ARP): only the flood list is given.
		v := &netlink.Vxlan{LinkAttrs: attrs, VxlanId: want.VXLAN.VNI, SrcAddr: net.ParseIP(want.VXLAN.Local), Port: want.VXLAN.Port, Learning: true}
		if dev, err := h.LinkByName(want.VXLAN.Dev); err == nil {
			v.VtepDevIndex = dev.Attrs().Index
		}
		if err := h.LinkAdd(v); err != nil {
			return fmt.Errorf("%s: vxlan %s: %w", ns, want.Name, err)
		}
		e.changef(ns, "link add %s type vxlan id %d", want.Name, want.VXLAN.VNI)
		if l, err = h.LinkByName(want.Name); err != nil {
			return err
		}
	}
	for _, f := range want.FDB {
		if f.MAC != plan.FloodMAC {
			continue
		}
		mac, _ := net.ParseMAC(f.MAC)
		n := &netlink.Neigh{LinkIndex: l.Attrs().Index, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT,
			Flags: netlink.NTF_SELF, HardwareAddr: mac, IP: net.ParseIP(f.Dst)}
		if err := h.NeighAppend(n); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("%s: fdb %s dst %s: %w", ns, f.MAC, f.Dst, err)
		}
	}
	return nil
}

// foreignHosts runs the site's agents on each of its nodes: the
// linuxbridge agent everywhere, the DHCP agent on the site's DHCP node.
func (l *Lab) foreignHosts(ctx context.Context, d *devcloud.Deployment, s *spec.Spec) ([]string, error) {
	var changes []string
	for _, h := range l.neutronHosts(s) {
		if d.HostRunning(h) {
			continue
		}
		if err := d.StartHost(ctx, h); err != nil {
			return changes, err
		}
		changes = append(changes, fmt.Sprintf("%s: neutron agents for host %s", h.NS, h.Name))
	}
	return changes, nil
}

// neutronHosts are the foreign sites' nodes as their clouds' hosts: the
// linuxbridge agent on each, the DHCP agent on the site's DHCP node.
func (l *Lab) neutronHosts(s *spec.Spec) []devcloud.Host {
	var out []devcloud.Host
	for _, sn := range s.SiteNames() {
		site := s.Sites[sn]
		if !site.Foreign() {
			continue
		}
		for _, n := range site.Nodes {
			out = append(out, devcloud.Host{Cloud: cloudName(s, sn), Name: n.Name, NS: l.NodeNS(n.Name), DHCP: site.DHCP != nil && site.DHCP.Node == n.Name})
		}
	}
	return out
}

// plugForeign does Nova's part for each of the foreign sites' VMs: the
// binding PUT (host, device_owner, device_id), the tap into the network's
// bridge brq<network id> (os-vif makes the bridge if the agent has not
// yet), at the network's MTU; then it waits until every port is ACTIVE, as
// libvirt waits for network-vif-plugged.
func (l *Lab) plugForeign(ctx context.Context, e *ensurer, clouds map[string]*openstack.Cloud, s *spec.Spec, p *plan.Plan, netIDs map[string]map[string]string) ([]string, error) {
	type booted struct {
		c      *openstack.Cloud
		portID string
		vm     string
	}
	var all []booted
	for _, n := range p.Nodes {
		if !n.Foreign {
			continue
		}
		sn := s.NodeSite(n.Name)
		c := clouds[sn]
		if c == nil {
			return nil, fmt.Errorf("lab: site %s has no cloud", sn)
		}
		ns := l.NodeNS(n.Name)
		for _, port := range n.Ports {
			vm, _ := s.VM(port.VM)
			if vm == nil || vm.PortID == "" {
				continue
			}
			if err := bind(ctx, c, vm.PortID, n.Name, vm.Name); err != nil {
				return nil, err
			}
			br := "brq" + netIDs[sn][port.Network][:spec.DeviceIDLen]
			h, err := e.handle(ns)
			if err != nil {
				return nil, err
			}
			if tap, err := h.LinkByName(port.Name); err == nil && tap.Attrs().MTU != port.MTU {
				if err := h.LinkSetMTU(tap, port.MTU); err != nil {
					return nil, err
				}
			}
			for _, f := range []func() error{
				func() error { return e.bridge(ns, br) },
				func() error { return e.master(ns, port.Name, br) },
				func() error { return e.up(ns, port.Name) },
				func() error { return e.up(ns, br) },
			} {
				if err := f(); err != nil {
					return nil, err
				}
			}
			all = append(all, booted{c, vm.PortID, vm.Name})
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, len(all))
	for i, b := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = waitActive(ctx, b.c, b.portID, b.vm, 90*time.Second)
		}()
	}
	wg.Wait()
	return nil, errors.Join(errs...)
}

// PlugVM does the hypervisor's part of a boot on one of the lab's nodes:
// the port's tap, its other end the eth0 of the VM's namespace with the
// port's MAC (and cidr, unless ""), plugged into bridge unless "" (os-vif
// plugs the tap for vif_type bridge, making the bridge if the agent has
// not yet; for vif_type tap the node's own agent plugs it). What exists
// already is left as it is.
func (l *Lab) PlugVM(nodeName, vm, tap, mac, cidr, bridge string) error {
	e := newEnsurer()
	defer e.close()
	node, vmNS := l.NodeNS(nodeName), l.VMNS(vm)
	steps := []func() error{
		func() error { return e.netns(vmNS) },
		func() error { return e.veth(vmNS, "eth0", node, tap, 0, mac) },
		func() error { return e.up(vmNS, "eth0") },
	}
	if cidr != "" {
		steps = append(steps, func() error { return e.addr(vmNS, "eth0", cidr) })
	}
	if bridge != "" {
		steps = append(steps, func() error { return e.bridge(node, bridge) }, func() error { return e.up(node, bridge) },
			func() error { return e.master(node, tap, bridge) })
	}
	return run(append(steps, func() error { return e.up(node, tap) }))
}

// waitActive waits for a port's status to be ACTIVE: its host's agent has
// wired and filtered it.
func waitActive(ctx context.Context, c *openstack.Cloud, id, vm string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		p, err := ports.Get(ctx, c.Network, id).Extract()
		if err == nil && p.Status == "ACTIVE" {
			return nil
		}
		if time.Now().After(deadline) {
			status := "unknown"
			if p != nil {
				status = p.Status
			}
			return fmt.Errorf("lab: cloud %s: the port of %s is %s after %s; its host's agent did not report it up (is the agent alive? see the lab's neutron logs)", c.Name, vm, status, within)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}
