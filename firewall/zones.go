package firewall

import (
	"maps"
	"regexp"
	"slices"
	"strconv"
)

// Zones gives every network with secured ports on the node a conntrack
// zone of its own, keyed by bridge: flows of two networks with identical
// addresses then never share state. Zones are per node, as Neutron's
// _find_open_zone allocates them.
//
// have is what the node already uses (read back from the kernel, or the
// last allocation): a zone there is kept as long as its network is still
// on the node and no other network claimed it first, so a restart or a new
// network never moves an existing network's flows to another zone. A new
// network takes its segment number when that is a free zone (so zones
// read like VLAN IDs on a host), otherwise the lowest free zone. nil have
// yields the same allocation every time for the same networks.
func (f *Fabric) Zones(node string, have map[string]uint16) map[string]uint16 {
	bridges := map[string]int{} // bridge -> segment
	for _, p := range f.Node(node) {
		nw := f.Networks[p.Network]
		bridges[nw.Bridge] = nw.Segment
	}
	out := map[string]uint16{}
	used := map[uint16]bool{0: true} // zone 0 is the default zone of everything else
	names := slices.Sorted(maps.Keys(bridges))
	for _, br := range names {
		if z, ok := have[br]; ok && !used[z] {
			out[br], used[z] = z, true
		}
	}
	for _, br := range names {
		if _, ok := out[br]; ok {
			continue
		}
		z := uint16(1)
		if seg := bridges[br]; seg > 0 && seg <= 0xffff && !used[uint16(seg)] {
			z = uint16(seg)
		}
		for used[z] {
			z++
		}
		out[br], used[z] = z, true
	}
	return out
}

// zoneRE reads a zone rule back in either rendering: nftables'
// `iifname "brq..." ct zone set N` and iptables' `-i brq... -j CT --zone N`.
var zoneRE = regexp.MustCompile(`(?:iifname "|-i )([^"\s]+)"?.*(?:ct zone set|--zone) (\d+)`)

// ParseZones reads bridge -> zone from rule texts; other lines are ignored.
func ParseZones(rules []string) map[string]uint16 {
	out := map[string]uint16{}
	for _, r := range rules {
		if m := zoneRE.FindStringSubmatch(r); m != nil {
			if z, err := strconv.ParseUint(m[2], 10, 16); err == nil {
				out[m[1]] = uint16(z)
			}
		}
	}
	return out
}

// PortIDs numbers the node's secured ports for the dispatch marks. IDs are
// per node (marks never leave it) and kept: a port in have keeps its ID as
// long as it is on the node and no other port took it first, so adding a
// port never renumbers another (which would leave two ports on one mark
// until the next full programming). A new port takes the fabric-wide
// number Compile gave it when that is free on the node, else the lowest
// free one.
func (f *Fabric) PortIDs(node string, have map[string]uint16) map[string]uint16 {
	ports := f.Node(node)
	out := map[string]uint16{}
	// An ID no port may have (read back from a kernel programmed before
	// idUnknown was reserved) is given up.
	used := map[uint16]bool{0: true, idUnknown: true, 0xffff: true}
	for _, p := range ports {
		if id, ok := have[p.Name]; ok && !used[id] {
			out[p.Name], used[id] = id, true
		}
	}
	for _, p := range ports {
		if _, ok := out[p.Name]; ok {
			continue
		}
		id := freeID(p.ID, used)
		out[p.Name], used[id] = id, true
	}
	return out
}
