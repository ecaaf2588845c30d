package dataplane

import (
	"errors"
	"fmt"
	"net"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/vishvananda/netlink"

	"github.com/bothnia/bothnia/plan"
)

// links makes every planned link of one namespace exist with the planned
// attributes, addresses and FDB entries.
func (a *applier) links(ns *plan.Namespace) error {
	h := a.handles[ns.Name]
	var errs []error
	for i := range ns.Links {
		want := &ns.Links[i]
		if err := a.link(h, ns.Name, want); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", want.Name, err))
		}
	}
	return errors.Join(errs...)
}

func (a *applier) link(h *netlink.Handle, ns string, want *plan.Link) error {
	l, err := h.LinkByName(want.Name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		l = nil
	case err != nil:
		return err
	}
	if l != nil && !owned(l) {
		// Never adopt: on a Knox host the name may be Neutron's (its agent
		// makes brq<network> bridges and em1.<vlan> devices the same way).
		return &ForeignLinkError{Name: want.Name, Kind: l.Type(), Alias: l.Attrs().Alias}
	}
	if l != nil && !sameKind(l, want) {
		if err := h.LinkDel(l); err != nil {
			return fmt.Errorf("delete to recreate: %w", err)
		}
		a.changef(ns, "link del %s (kind or identity changed)", want.Name)
		l = nil
	}
	if l == nil {
		if l, err = a.create(h, ns, want); err != nil {
			return err
		}
		a.changef(ns, "link add %s", want.String())
	}
	if l.Attrs().Alias != Alias {
		if err := h.LinkSetAlias(l, Alias); err != nil {
			return fmt.Errorf("set alias: %w", err)
		}
	}
	if err := a.attrs(h, ns, l, want); err != nil {
		return err
	}
	if err := a.addrs(h, ns, l, want.Addrs, true); err != nil {
		return err
	}
	if err := a.neighs(h, ns, l, want); err != nil {
		return err
	}
	if err := a.suppress(h, ns, l, want); err != nil {
		return err
	}
	if want.Kind == plan.VXLAN {
		return a.fdb(h, ns, l, want.FDB)
	}
	return nil
}

// sameKind reports whether an existing link can be kept for the planned
// one: same kind and, for tunnels, the same identity (VNI, local address,
// port, parent), which the kernel will not change in place.
func sameKind(l netlink.Link, want *plan.Link) bool {
	switch want.Kind {
	case plan.Bridge:
		_, ok := l.(*netlink.Bridge)
		return ok
	case plan.Veth:
		_, ok := l.(*netlink.Veth)
		return ok
	case plan.VXLAN:
		v, ok := l.(*netlink.Vxlan)
		return ok && v.VxlanId == want.VXLAN.VNI && v.Port == want.VXLAN.Port &&
			v.SrcAddr.Equal(net.ParseIP(want.VXLAN.Local)) && !v.Learning
	case plan.VLAN:
		v, ok := l.(*netlink.Vlan)
		return ok && v.VlanId == want.VLAN.ID
	case plan.Macvlan:
		m, ok := l.(*netlink.Macvlan)
		return ok && m.Mode == netlink.MACVLAN_MODE_BRIDGE
	}
	return false
}

func (a *applier) create(h *netlink.Handle, ns string, want *plan.Link) (netlink.Link, error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = want.Name
	attrs.MTU = want.MTU
	if want.MAC != "" {
		mac, err := net.ParseMAC(want.MAC)
		if err != nil {
			return nil, err
		}
		attrs.HardwareAddr = mac
	}
	// A tunnel or macvlan in one of bothnia's namespaces is made from
	// the host namespace, where its underlay or parent is, straight into
	// its own: its socket (VXLAN) stays in the host namespace.
	host := h
	if ns != plan.HostNS && (want.Kind == plan.VXLAN || want.Kind == plan.Macvlan) {
		host = a.handles[plan.HostNS]
		attrs.Namespace = netlink.NsFd(int(a.nss[ns]))
	}
	var l netlink.Link
	switch want.Kind {
	case plan.Bridge:
		ageing := uint32(want.AgeingCentis)
		l = &netlink.Bridge{LinkAttrs: attrs, AgeingTime: &ageing}
	case plan.VXLAN:
		v := &netlink.Vxlan{LinkAttrs: attrs, VxlanId: want.VXLAN.VNI, SrcAddr: net.ParseIP(want.VXLAN.Local),
			Port: want.VXLAN.Port, Learning: false}
		if want.VXLAN.Dev != "" {
			dev, err := host.LinkByName(want.VXLAN.Dev)
			if err != nil {
				return nil, fmt.Errorf("underlay device %s: %w", want.VXLAN.Dev, err)
			}
			v.VtepDevIndex = dev.Attrs().Index
		}
		l = v
	case plan.VLAN:
		parent, err := h.LinkByName(want.VLAN.Parent)
		if err != nil {
			return nil, fmt.Errorf("VLAN parent %s: %w", want.VLAN.Parent, err)
		}
		attrs.ParentIndex = parent.Attrs().Index
		l = &netlink.Vlan{LinkAttrs: attrs, VlanId: want.VLAN.ID}
	case plan.Macvlan:
		parent, err := host.LinkByName(want.Macvlan.Parent)
		if err != nil {
			return nil, fmt.Errorf("macvlan parent %s in the host namespace: %w", want.Macvlan.Parent, err)
		}
		attrs.ParentIndex = parent.Attrs().Index
		l = &netlink.Macvlan{LinkAttrs: attrs, Mode: netlink.MACVLAN_MODE_BRIDGE}
	case plan.Veth:
		peerNS, ok := a.nss[want.Peer.Namespace]
		if !ok {
			return nil, fmt.Errorf("peer namespace %q is not in the node's plan", want.Peer.Namespace)
		}
		l = &netlink.Veth{LinkAttrs: attrs, PeerName: want.Peer.Name, PeerNamespace: netlink.NsFd(int(peerNS))}
	default:
		return nil, fmt.Errorf("unknown link kind %q", want.Kind)
	}
	if err := host.LinkAdd(l); err != nil {
		return nil, fmt.Errorf("create %s: %w", want.Kind, err)
	}
	if want.Kind == plan.Veth {
		// The peer is bothnia's from birth: mark it now, so the peer's own
		// turn finds a link it owns (it adopts nothing unmarked).
		if ph := a.handles[want.Peer.Namespace]; ph != nil {
			if p, err := ph.LinkByName(want.Peer.Name); err == nil {
				if err := ph.LinkSetAlias(p, Alias); err != nil {
					return nil, fmt.Errorf("mark peer %s: %w", want.Peer.Name, err)
				}
			}
		}
	}
	// Create, then verify: re-read what the kernel made.
	return h.LinkByName(want.Name)
}

// attrs sets the mutable attributes: MTU, MAC, master, ageing, up.
func (a *applier) attrs(h *netlink.Handle, ns string, l netlink.Link, want *plan.Link) error {
	at := l.Attrs()
	if want.MTU != 0 && at.MTU != want.MTU {
		if err := h.LinkSetMTU(l, want.MTU); err != nil {
			return fmt.Errorf("set mtu: %w", err)
		}
		a.changef(ns, "link set %s mtu %d", want.Name, want.MTU)
	}
	if want.MAC != "" && at.HardwareAddr.String() != want.MAC {
		mac, _ := net.ParseMAC(want.MAC)
		if err := h.LinkSetHardwareAddr(l, mac); err != nil {
			return fmt.Errorf("set mac: %w", err)
		}
		a.changef(ns, "link set %s address %s", want.Name, want.MAC)
	}
	if err := a.master(h, ns, l, want.Master); err != nil {
		return err
	}
	if br, ok := l.(*netlink.Bridge); ok && want.Kind == plan.Bridge {
		if br.AgeingTime == nil || int(*br.AgeingTime) != want.AgeingCentis {
			ageing := uint32(want.AgeingCentis)
			if err := h.LinkModify(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Index: at.Index, Name: at.Name}, AgeingTime: &ageing}); err != nil {
				return fmt.Errorf("set ageing: %w", err)
			}
			a.changef(ns, "link set %s type bridge ageing_time %d", want.Name, want.AgeingCentis)
		}
	}
	if want.Down {
		return a.down(h, ns, l)
	}
	return a.up(h, ns, l)
}

func (a *applier) down(h *netlink.Handle, ns string, l netlink.Link) error {
	if l.Attrs().Flags&net.FlagUp == 0 {
		return nil
	}
	if err := h.LinkSetDown(l); err != nil {
		return fmt.Errorf("set down: %w", err)
	}
	a.changef(ns, "link set %s down", l.Attrs().Name)
	return nil
}

func (a *applier) master(h *netlink.Handle, ns string, l netlink.Link, master string) error {
	at := l.Attrs()
	if master == "" {
		return nil
	}
	br, err := h.LinkByName(master)
	if err != nil {
		return fmt.Errorf("master %s: %w", master, err)
	}
	if at.MasterIndex == br.Attrs().Index {
		return nil
	}
	if err := h.LinkSetMasterByIndex(l, br.Attrs().Index); err != nil {
		return fmt.Errorf("set master %s: %w", master, err)
	}
	a.changef(ns, "link set %s master %s", at.Name, master)
	return nil
}

func (a *applier) up(h *netlink.Handle, ns string, l netlink.Link) error {
	if l.Attrs().Flags&net.FlagUp != 0 {
		return nil
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("set up: %w", err)
	}
	a.changef(ns, "link set %s up", l.Attrs().Name)
	return nil
}

// addrs makes the link's IPv4 addresses exactly want. With prune false
// (links bothnia does not own) it only adds.
func (a *applier) addrs(h *netlink.Handle, ns string, l netlink.Link, want []string, prune bool) error {
	have, err := retry(func() ([]netlink.Addr, error) { return h.AddrList(l, netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	wantSet := map[string]bool{}
	for _, w := range want {
		wantSet[w] = true
	}
	haveSet := map[string]bool{}
	for _, ad := range have {
		k := ad.IPNet.String()
		haveSet[k] = true
		if !wantSet[k] && prune {
			if err := h.AddrDel(l, &ad); err != nil {
				return fmt.Errorf("del address %s: %w", k, err)
			}
			a.changef(ns, "addr del %s dev %s", k, l.Attrs().Name)
		}
	}
	for _, w := range want {
		if haveSet[w] {
			continue
		}
		ad, err := netlink.ParseAddr(w)
		if err != nil {
			return err
		}
		if err := h.AddrAdd(l, ad); err != nil {
			return fmt.Errorf("add address %s: %w", w, err)
		}
		a.changef(ns, "addr add %s dev %s", w, l.Attrs().Name)
	}
	return nil
}

// fdb makes a VXLAN device's remote entries exactly want.
func (a *applier) fdb(h *netlink.Handle, ns string, l netlink.Link, want []plan.FDB) error {
	have, err := a.neighsOf(h, ns, l.Attrs().Index, unix.AF_BRIDGE)
	if err != nil {
		return fmt.Errorf("list fdb: %w", err)
	}
	key := func(mac, dst string) string { return mac + " " + dst }
	wantSet := map[string]bool{}
	for _, f := range want {
		wantSet[key(f.MAC, f.Dst)] = true
	}
	haveSet := map[string]bool{}
	for _, n := range have {
		if n.IP == nil { // the bridge's own learned entries, not the tunnel's
			continue
		}
		k := key(n.HardwareAddr.String(), n.IP.String())
		haveSet[k] = true
		if !wantSet[k] {
			n := n
			if err := h.NeighDel(&n); err != nil {
				return fmt.Errorf("del fdb %s: %w", k, err)
			}
			a.changef(ns, "fdb del %s dev %s", k, l.Attrs().Name)
		}
	}
	for _, f := range want {
		if haveSet[key(f.MAC, f.Dst)] {
			continue
		}
		mac, _ := net.ParseMAC(f.MAC)
		n := &netlink.Neigh{
			LinkIndex: l.Attrs().Index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
			State: netlink.NUD_PERMANENT | netlink.NUD_NOARP, HardwareAddr: mac, IP: net.ParseIP(f.Dst),
		}
		// The flood MAC takes one entry per peer, so it is appended; a
		// unicast MAC has one destination, so it is replaced.
		add := h.NeighSet
		if f.MAC == plan.FloodMAC {
			add = h.NeighAppend
		}
		if err := add(n); err != nil {
			return fmt.Errorf("add fdb %s dst %s: %w", f.MAC, f.Dst, err)
		}
		a.changef(ns, "fdb append %s dev %s dst %s", f.MAC, l.Attrs().Name, f.Dst)
	}
	return nil
}

// ports plugs the hypervisor's VM devices into their bridges. A device the
// hypervisor has not made yet is pending, not an error.
func (a *applier) ports(node *plan.Node) error {
	h := a.handles[plan.HostNS]
	// One dump, not a lookup per port: a node with thousands of ports,
	// most of them not plugged yet, is read once per converge.
	links, err := retry(h.LinkList)
	if err != nil {
		return err
	}
	byName := make(map[string]netlink.Link, len(links))
	for _, l := range links {
		byName[l.Attrs().Name] = l
	}
	var errs []error
	for _, p := range node.Ports {
		l, ok := byName[p.Name]
		if !ok {
			a.res.Pending = append(a.res.Pending, fmt.Sprintf("%s (vm %s)", p.Name, p.VM))
			continue
		}
		if a.t.HoldNewPorts && !a.inBridge(l, p.Bridge, byName) {
			a.res.Pending = append(a.res.Pending, fmt.Sprintf("%s (vm %s): held out of %s until the firewall holds its rules", p.Name, p.VM, p.Bridge))
			continue
		}
		if l.Attrs().MTU != p.MTU {
			if err := h.LinkSetMTU(l, p.MTU); err != nil {
				errs = append(errs, fmt.Errorf("%s: set mtu: %w", p.Name, err))
				continue
			}
			a.changef(plan.HostNS, "link set %s mtu %d", p.Name, p.MTU)
		}
		if err := a.master(h, plan.HostNS, l, p.Bridge); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p.Name, err))
			continue
		}
		if err := a.up(h, plan.HostNS, l); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p.Name, err))
		}
	}
	return errors.Join(errs...)
}

// inBridge reports whether a link is already a port of the named bridge.
func (a *applier) inBridge(l netlink.Link, bridge string, byName map[string]netlink.Link) bool {
	br, ok := byName[bridge]
	return ok && l.Attrs().MasterIndex == br.Attrs().Index
}

// prune deletes owned links the plan no longer has and unplugs foreign
// devices from owned bridges (a VM port removed from the spec must leave the
// network even if its tap lingers).
func (a *applier) prune(ns *plan.Namespace, ports []plan.Port) error {
	h := a.handles[ns.Name]
	links, err := retry(h.LinkList)
	if err != nil {
		return err
	}
	want := map[string]bool{}
	for _, l := range ns.Links {
		want[l.Name] = true
	}
	portBridge := map[string]string{}
	if ns.Name == plan.HostNS {
		for _, p := range ports {
			portBridge[p.Name] = p.Bridge
		}
	}
	byIndex := map[int]netlink.Link{}
	for _, l := range links {
		byIndex[l.Attrs().Index] = l
	}
	var gone []string
	var errs []error
	for _, l := range links {
		at := l.Attrs()
		if owned(l) && !want[at.Name] {
			if err := h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
				errs = append(errs, fmt.Errorf("del %s: %w", at.Name, err))
				continue
			}
			gone = append(gone, at.Name)
			continue
		}
		if m, ok := byIndex[at.MasterIndex]; ok && owned(m) && !owned(l) && portBridge[at.Name] != m.Attrs().Name {
			if err := h.LinkSetNoMaster(l); err != nil {
				errs = append(errs, fmt.Errorf("unplug %s: %w", at.Name, err))
				continue
			}
			a.changef(ns.Name, "link set %s nomaster", at.Name)
		}
	}
	sort.Strings(gone)
	for _, g := range gone {
		a.changef(ns.Name, "link del %s", g)
	}
	return errors.Join(errs...)
}

// ForeignLinkError is a planned link whose name another owner already
// uses. bothnia changes nothing about it.
type ForeignLinkError struct {
	Name, Kind, Alias string
}

func (e *ForeignLinkError) Error() string {
	owner := "something else (no ifalias)"
	if e.Alias != "" {
		owner = fmt.Sprintf("something else (ifalias %q)", e.Alias)
	}
	return fmt.Sprintf("a %s named %s exists and belongs to %s, not to bothnia (ifalias %q): bothnia never adopts a link it did not create; "+
		"if it is Neutron's, move the network to bothnia first (see the README) or give the network another ID", e.Kind, e.Name, owner, Alias)
}
