package node

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/bothnia/bothnia/firewall"
	"github.com/bothnia/bothnia/namespace"
)

// Revocation returns the revocation of the last converged firewall, to
// run later: it keeps what it judges by, so the converger may converge
// again while it runs. Run, it deletes the node's conntrack entries that
// the firewall no longer allows (a rule deleted, a port out of a group, a
// member out of a remote group, a port removed) and returns how many.
// Without it an established stream keeps flowing, since established
// traffic passes before any group rule (Neutron deletes such entries too).
// Each entry is judged as the connection's first packet by the reference
// evaluator, in the network its zone belongs to; entries of zones bothnia
// did not assign are left alone. Its cost is a dump of the conntrack
// table, which walks the host's whole hash (262,144 buckets here: 20 to
// 50 ms per family, however few entries the node has), so the agent runs
// it beside its converges.
func (c *Converger) Revocation() func() (int, error) {
	none := func() (int, error) { return 0, nil }
	if c.last == nil || c.fw == nil {
		return none
	}
	f, node, ns := c.last.Firewall, c.last.Name, c.Target.HostNS
	zoneNet := map[uint16]string{}
	for br, z := range c.fw.Zones() {
		for name, nw := range f.Networks {
			if nw.Bridge == br {
				zoneNet[z] = name
			}
		}
	}
	if len(zoneNet) == 0 {
		return none
	}
	return func() (int, error) {
		h, nsh, err := namespace.Netlink(ns)
		if err != nil {
			return 0, err
		}
		defer nsh.Close()
		defer h.Close()
		total := 0
		for _, fam := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
			n, err := h.ConntrackDeleteFilters(netlink.ConntrackTable, fam, revoked{f, zoneNet})
			total += int(n)
			if err != nil {
				return total, fmt.Errorf("node %s: revoke connections: %w", node, err)
			}
		}
		return total, nil
	}
}

// revoked matches the entries the fabric no longer allows.
type revoked struct {
	f       *firewall.Fabric
	zoneNet map[uint16]string
}

func (r revoked) MatchConntrackFlow(fl *netlink.ConntrackFlow) bool {
	network, ok := r.zoneNet[fl.Zone]
	if !ok {
		return false
	}
	src, ok1 := netip.AddrFromSlice(fl.Forward.SrcIP)
	dst, ok2 := netip.AddrFromSlice(fl.Forward.DstIP)
	if !ok1 || !ok2 {
		return false
	}
	src, dst = src.Unmap(), dst.Unmap()
	from, to := r.f.PortAt(network, src), r.f.PortAt(network, dst)
	if from == nil && to == nil {
		return false
	}
	fr := firewall.Frame{From: from, To: to, EtherType: firewall.EtherIPv4, Src: src, Dst: dst,
		Proto: int(fl.Forward.Protocol), SPort: int(fl.Forward.SrcPort), DPort: int(fl.Forward.DstPort)}
	if src.Is6() {
		fr.EtherType = firewall.EtherIPv6
	}
	switch fr.Proto {
	case 1:
		fr.SPort, fr.DPort = 8, 0 // tracked ICMP is an echo (or another request)
	case 58:
		fr.SPort, fr.DPort = 128, 0
	}
	if from != nil {
		fr.SrcMAC = from.PairMAC(src)
	}
	return !r.f.Decide(fr).Allowed
}
