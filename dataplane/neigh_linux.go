package dataplane

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/bothnia/bothnia/plan"
)

// neighs makes a bridge's permanent neighbour entries exactly the plan's:
// the addresses of the network's members on other nodes, which the bridge
// answers ARP and neighbour solicitations for. Only permanent entries are
// bothnia's; what the kernel learned is left alone.
func (a *applier) neighs(h *netlink.Handle, ns string, l netlink.Link, want *plan.Link) error {
	if want.Kind != plan.Bridge && want.Kind != plan.Veth {
		return nil
	}
	wantSet := map[string]string{}
	for _, n := range want.Neigh {
		if a, err := netip.ParseAddr(n.IP); err == nil {
			wantSet[a.String()] = n.MAC
		}
	}
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		have, err := a.neighsOf(h, ns, l.Attrs().Index, fam)
		if err != nil {
			return fmt.Errorf("list neighbours: %w", err)
		}
		for _, n := range have {
			if n.State&netlink.NUD_PERMANENT == 0 {
				continue
			}
			ip, _ := netip.AddrFromSlice(n.IP)
			ip = ip.Unmap()
			if mac, ok := wantSet[ip.String()]; ok && mac == n.HardwareAddr.String() {
				delete(wantSet, ip.String())
				continue
			}
			n := n
			if err := h.NeighDel(&n); err != nil {
				return fmt.Errorf("del neighbour %s: %w", ip, err)
			}
			a.changef(ns, "neigh del %s dev %s", ip, want.Name)
		}
	}
	for _, n := range want.Neigh {
		ip, err := netip.ParseAddr(n.IP)
		if err != nil {
			continue
		}
		if _, ok := wantSet[ip.String()]; !ok {
			continue // already there
		}
		mac, _ := net.ParseMAC(n.MAC)
		fam := unix.AF_INET
		if ip.Is6() {
			fam = unix.AF_INET6
		}
		nb := &netlink.Neigh{LinkIndex: l.Attrs().Index, Family: fam, State: netlink.NUD_PERMANENT, IP: ip.AsSlice(), HardwareAddr: mac}
		if err := h.NeighSet(nb); err != nil {
			return fmt.Errorf("add neighbour %s lladdr %s: %w", ip, n.MAC, err)
		}
		a.changef(ns, "neigh replace %s lladdr %s dev %s nud permanent", ip, n.MAC, want.Name)
	}
	return nil
}

// suppress sets a bridge port's neighbour suppression, learning and static
// forwarding entries (the other nodes' MACs) as the plan says.
func (a *applier) suppress(h *netlink.Handle, ns string, l netlink.Link, want *plan.Link) error {
	if want.Master == "" {
		return nil
	}
	pi, err := h.LinkGetProtinfo(l)
	if err != nil {
		return fmt.Errorf("bridge port flags: %w", err)
	}
	if pi.NeighSuppress != want.NeighSuppress {
		if err := h.LinkSetBrNeighSuppress(l, want.NeighSuppress); err != nil {
			return fmt.Errorf("set neigh_suppress: %w", err)
		}
		a.changef(ns, "link set %s type bridge_slave neigh_suppress %s", want.Name, onOff(want.NeighSuppress))
	}
	if pi.Learning != !want.NoLearning {
		if err := h.LinkSetLearning(l, !want.NoLearning); err != nil {
			return fmt.Errorf("set learning: %w", err)
		}
		a.changef(ns, "link set %s type bridge_slave learning %s", want.Name, onOff(!want.NoLearning))
	}
	if want.Kind != plan.VXLAN && want.Kind != plan.VLAN {
		return nil
	}
	have, err := a.neighsOf(h, ns, l.Attrs().Index, unix.AF_BRIDGE)
	if err != nil {
		return fmt.Errorf("list fdb: %w", err)
	}
	wantSet := map[string]bool{}
	for _, m := range want.Static {
		wantSet[m] = true
	}
	for _, n := range have {
		// Static master entries: no tunnel destination, NOARP, not learned.
		if n.IP != nil || n.Flags&netlink.NTF_MASTER == 0 && n.Flags&netlink.NTF_SELF != 0 || n.State&netlink.NUD_NOARP == 0 || n.State&netlink.NUD_PERMANENT != 0 {
			continue
		}
		mac := n.HardwareAddr.String()
		if wantSet[mac] {
			delete(wantSet, mac)
			continue
		}
		n := n
		n.Flags = netlink.NTF_MASTER
		if err := h.NeighDel(&n); err != nil {
			return fmt.Errorf("del fdb %s master: %w", mac, err)
		}
		a.changef(ns, "fdb del %s dev %s master", mac, want.Name)
	}
	for _, m := range want.Static {
		if !wantSet[m] {
			continue
		}
		mac, _ := net.ParseMAC(m)
		n := &netlink.Neigh{LinkIndex: l.Attrs().Index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_MASTER, State: netlink.NUD_NOARP, HardwareAddr: mac}
		if err := h.NeighSet(n); err != nil {
			return fmt.Errorf("add fdb %s dev %s master static: %w", m, want.Name, err)
		}
		a.changef(ns, "fdb replace %s dev %s master static", m, want.Name)
	}
	return nil
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}
