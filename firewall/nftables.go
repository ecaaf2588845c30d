package firewall

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strconv"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/bothnia/bothnia/internal/parallel"
	"github.com/bothnia/bothnia/nft"
	"github.com/bothnia/bothnia/plan"
)

// zonePriority runs the zone chain after defragmentation (-400) and just
// before the raw table (-300), whose hooks another tool may have
// registered first: Neutron's linuxbridge agent puts its own CT --zone
// on every tap named after a Neutron port, bothnia's too, on a host the
// two share. A conntrack template is set once (nft's "ct zone set" and
// xt_CT both leave a packet that has one alone), so the first chain
// decides; of hooks of equal priority the one made last runs first
// (nf_hook_entries_grow), so at -300 Neutron's agent, started after
// bothnia's, would win.
const zonePriority = -301

// Table names of the nftables rendering; bothnia owns them whole.
const (
	L2Table = "bothnia-l2" // bridge family: anti-spoofing and port marks
	FWTable = "bothnia-fw" // inet family: zones and stateful security groups
)

// Marks carry the bridge ports into the inet hooks, where br_netfilter
// shows only the bridge: the input port's ID in the high half, the output
// port's in the low half.
const (
	inMask  = 0xffff0000
	outMask = 0x0000ffff
	idBits  = 16
)

// markEstablished is the mark of a frame of an established (or related)
// connection: no port ID is 0xffff, so no dispatch mark equals it.
const markEstablished = 0xffffffff

// outNode is the out-port half of the mark of a frame a bridge delivers
// to the node itself (no port ID is 0xffff): the node's input chain holds
// it to the sender's egress checks, and the forward chain drops it, since
// a frame the node would route from a bridge goes around both ports'
// groups.
const outNode = 0x0000ffff

// idUnknown is the dispatch ID of a tap the firewall does not know; no
// port has it (see freeID).
const idUnknown = 0xfffe

func inMark(id uint16) uint32  { return uint32(id) << 16 }
func outMark(id uint16) uint32 { return uint32(id) }

// Set and chain names.
const (
	setPorts   = "ports"
	setSpoof4  = "spoof-v4"
	setSpoof6  = "spoof-v6"
	setNets4   = "spoof-v4-nets"
	setNets6   = "spoof-v6-nets"
	setMACs    = "port-macs"
	setARPMACs = "arp-macs"
	mapInMarks = "in-marks"
	setDHCP    = "dhcp-servers"
	setBridges = "bridges"
	setKnown   = "known-ports"
	chUnkIn    = "unknown-in"
	chUnkOut   = "unknown-out"
	chSpoof    = "anti-spoof"
	chND       = "nd"
	chFromPort = "from-port"
	chToPort   = "to-port"
	chEgress   = "egress-groups"
	chIngress  = "ingress-groups"
)

func outBitSet(k int) string { return fmt.Sprintf("out-bit-%d", k) }
func egSet(g string) string  { return "eg-" + g }
func inSet(g string) string  { return "in-" + g }
func setName(g string, v6 bool) string {
	if v6 {
		return "rg-" + g + "-v6"
	}
	return "rg-" + g + "-v4"
}

// RenderNFT renders one node's firewall. Everything that grows with the
// number of ports or members is a set element, never a rule or a chain:
//
//	bridge prerouting: iifname . ether saddr . ip saddr @spoof-v4 (ARP, IPv6 alike)
//	bridge forward:    mark = in-port ID << 16 | out-port ID, from a map and
//	                   sixteen one-bit sets (nftables cannot OR a map's value)
//	inet prerouting:   ct zone per bridge (one per network)
//	inet forward:      egress checks, then "mark & 0xffff0000 @eg-<group> jump sg-<group>-out"
//	to-port:           ingress checks, then "mark & 0xffff @in-<group> jump sg-<group>-in"
//
// Per packet the work is a fixed number of set lookups plus the rules of
// the groups in use on the node, whatever the number of ports or members.
// Adding a port writes only elements, so the kernel's whole-table
// validation, which every new chain, rule or jump element triggers, never
// runs for it and the cost stays flat as the node fills up.
//
// Neutron's egress chain RETURNs to a shared chain that ACCEPTs; here an
// allowed egress goes straight to the ingress checks of the destination,
// after the invalid-state drop, so an allow-everything egress rule (the
// seed's "surprising" -j RETURN) cannot let INVALID packets through.
func RenderNFT(f *Fabric, node string) *nft.Ruleset {
	return RenderNFTNode(f, node, f.Zones(node, nil), f.PortIDs(node, nil))
}

// RenderNFTNode renders one node's firewall with the node's conntrack
// zones (bridge -> zone, from Zones) and port IDs (tap -> ID, from PortIDs).
func RenderNFTNode(f *Fabric, node string, zoneOf, ids map[string]uint16) *nft.Ruleset {
	return renderNFTNode(f, node, zoneOf, ids, &portCache{})
}

// portCache keeps each port's elements between renders of one node: a
// port whose ID, pairs and groups are unchanged has the same elements, so
// a render after one port changed builds one port's elements, not every
// port's.
type portCache struct {
	m map[string]cachedPort // by tap
}

type cachedPort struct {
	id     uint16
	pairs  []Pair
	groups []string
	pe     PortElems
}

// kept returns the port's elements from the last render if the port is
// the same.
func (c *portCache) kept(p *Port) (cachedPort, bool) {
	old, ok := c.m[p.Name]
	return old, ok && old.id == p.ID && slices.Equal(old.pairs, p.Pairs) && slices.Equal(old.groups, p.Groups)
}

// update renders the ports whose elements are not kept, on every CPU when
// there are many (a starting agent renders all of a node's ports), and
// returns every port's elements, keeping them for the next render.
func (c *portCache) update(f *Fabric, ports []Port) []PortElems {
	out := make([]PortElems, len(ports))
	next := make(map[string]cachedPort, len(ports))
	var todo []int
	for i := range ports {
		if old, ok := c.kept(&ports[i]); ok {
			out[i], next[ports[i].Name] = old.pe, old
		} else {
			todo = append(todo, i)
		}
	}
	parallel.For(len(todo), func(j int) { out[todo[j]] = portElems(f, &ports[todo[j]]) })
	for _, i := range todo {
		p := &ports[i]
		next[p.Name] = cachedPort{p.ID, slices.Clone(p.Pairs), slices.Clone(p.Groups), out[i]}
	}
	c.m = next
	return out
}

func renderNFTNode(f *Fabric, node string, zoneOf, ids map[string]uint16, cache *portCache) *nft.Ruleset {
	ports := f.Node(node)
	for i := range ports {
		ports[i].ID = ids[ports[i].Name]
	}
	l2 := &nft.Table{Family: nftables.TableFamilyBridge, Name: L2Table}
	fw := &nft.Table{Family: nftables.TableFamilyINet, Name: FWTable}
	rs := &nft.Ruleset{Tables: []*nft.Table{l2, fw}}

	spoof4T, _ := nftables.ConcatSetType(nftables.TypeIFName, nftables.TypeEtherAddr, nftables.TypeIPAddr)
	spoof6T, _ := nftables.ConcatSetType(nftables.TypeIFName, nftables.TypeEtherAddr, nftables.TypeIP6Addr)
	macsT, _ := nftables.ConcatSetType(nftables.TypeIFName, nftables.TypeEtherAddr)
	arpT, _ := nftables.ConcatSetType(nftables.TypeIFName, nftables.TypeEtherAddr, nftables.TypeEtherAddr)
	l2.Sets = []*nft.Set{
		{Name: setPorts, KeyType: nftables.TypeIFName},
		// A port's own addresses are exact keys, found by hash whatever
		// the number of ports; only allowed address pairs wider than one
		// address need an interval set, whose lookup (pipapo) grows with
		// its elements. Most ports have none, so the second set is small.
		{Name: setSpoof4, KeyType: spoof4T, Concat: true},
		{Name: setSpoof6, KeyType: spoof6T, Concat: true},
		{Name: setNets4, KeyType: spoof4T, Interval: true, Concat: true},
		{Name: setNets6, KeyType: spoof6T, Interval: true, Concat: true},
		{Name: setMACs, KeyType: macsT, Concat: true},
		{Name: setARPMACs, KeyType: arpT, Concat: true},
		{Name: mapInMarks, KeyType: nftables.TypeIFName, DataType: nftables.TypeMark, Map: true},
		{Name: setBridges, KeyType: nftables.TypeIFName, Elems: ifElems(f.Bridges())},
		// Every port of bothnia's bridges the firewall knows: the secured
		// ports (added with their elements), the open ones, the uplinks.
		{Name: setKnown, KeyType: nftables.TypeIFName, Elems: ifElems(append(f.OpenOn(node), f.Uplinks()...))},
	}
	// What the bridge sends into a secured port carries no VLAN tag but a
	// priority tag around IPv4 or IPv6: a tagged frame from an unsecured
	// port or the uplink would otherwise pass the groups unseen, since
	// the inet hooks never see what they cannot parse as IP.
	// The ether type is compared before the port lookup: an untagged
	// frame, nearly every frame, then costs no lookup here.
	fwdRules := []nft.Rule{
		nft.R().EtherType(TPIDSTag).InSet(setPorts, false, nft.FOifname).Counter().Drop(),
		nft.R().EtherType(TPIDCTag).VlanIDNeq(0).InSet(setPorts, false, nft.FOifname).Counter().Drop(),
		nft.R().EtherType(TPIDCTag).MetaProtocolNot(nft.EtherIPv4, nft.EtherIPv6).InSet(setPorts, false, nft.FOifname).Counter().Drop(),
		// A frame of an established connection is accepted by the inet
		// forward chain whatever its ports, so it needs no dispatch mark:
		// it skips the seventeen lookups below, in sets that grow with
		// the node's ports (the inet prerouting chain "established",
		// after conntrack, marked it).
		nft.R().MarkMaskEq(0xffffffff, markEstablished).Accept(),
		nft.R().MarkSet(0).Done(), nft.R().MarkSetIifMap(mapInMarks).Done(),
		// Fail closed: a tap that is not a port the firewall knows
		// (plugged before its rules are in) exchanges nothing with
		// bothnia's ports and uplinks, whatever the ethertype. A known
		// port is on one of bothnia's bridges, so the tap is too: no
		// need for the bridge's name, which this kernel's bridge family
		// cannot read (no "meta ibrname"). Between two such taps, IP is
		// marked for the inet hooks, which see the bridge.
		unknownTap(false).Jump(chUnkIn),
	}
	for k := 0; k < idBits; k++ {
		l2.Sets = append(l2.Sets, &nft.Set{Name: outBitSet(k), KeyType: nftables.TypeIFName})
		fwdRules = append(fwdRules, nft.R().InSet(outBitSet(k), false, nft.FOifname).MarkOr(1<<k).Done())
	}
	fwdRules = append(fwdRules, unknownTap(true).Jump(chUnkOut))
	l2.Chains = []*nft.Chain{
		{Name: "prerouting", Hook: &nft.Hook{Type: nftables.ChainTypeFilter, Hooknum: *nftables.ChainHookPrerouting, Priority: -300},
			Rules: []nft.Rule{nft.R().InSet(setPorts, false, nft.FIifname).Goto(chSpoof)}},
		{Name: chSpoof, Rules: antiSpoof()},
		{Name: chUnkIn, Rules: []nft.Rule{
			nft.R().InSet(setKnown, false, nft.FOifname).Counter().Drop(),
			nft.R().MarkSet(inMark(idUnknown)).Done(),
		}},
		{Name: chUnkOut, Rules: []nft.Rule{
			nft.R().InSet(setKnown, false, nft.FIifname).Counter().Drop(),
			nft.R().MarkOr(outMark(idUnknown)).Done(),
		}},
		{Name: chND, Rules: ndRules()},
		// Priority -200 runs before br_netfilter (-1) hands the packet to
		// the inet forward hook.
		{Name: "forward", Hook: &nft.Hook{Type: nftables.ChainTypeFilter, Hooknum: *nftables.ChainHookForward, Priority: -200},
			Rules: fwdRules},
		// What a bridge delivers to the node itself carries the sender's
		// port (if secured) and outNode, which the inet input chain
		// holds to the sender's egress checks and the forward chain
		// drops. This kernel has no "meta ibrname" in the bridge family
		// (CONFIG_NFT_BRIDGE_META), so the bridge is judged in the inet
		// hooks: every bridge's frames to the node are marked.
		{Name: "input", Hook: &nft.Hook{Type: nftables.ChainTypeFilter, Hooknum: *nftables.ChainHookInput, Priority: -200},
			Rules: []nft.Rule{
				nft.R().MarkSet(outNode).Done(),
				nft.R().MarkSetIifMap(mapInMarks).Done(),
				nft.R().InSet(setPorts, false, nft.FIifname).MarkOr(outNode).Done(),
				unknownTap(false).MarkSet(inMark(idUnknown) | outNode).Done(),
			}},
	}

	// A DHCP server's offers are accepted from its own network's bridge
	// only, as the evaluator and the iptables layout do.
	dhcpT, _ := nftables.ConcatSetType(nftables.TypeIFName, nftables.TypeIPAddr)
	dhcpSet := &nft.Set{Name: setDHCP, KeyType: dhcpT, Concat: true}
	fw.Sets = []*nft.Set{dhcpSet, {Name: setBridges, KeyType: nftables.TypeIFName, Elems: ifElems(f.Bridges())}}
	var zones []nft.Rule
	seenNet := map[string]bool{}
	groups := map[string]bool{}
	for _, p := range ports {
		if !seenNet[p.Network] {
			seenNet[p.Network] = true
			nw := f.Networks[p.Network]
			zones = append(zones, nft.R().Iifname(nw.Bridge).CtZoneSet(zoneOf[nw.Bridge]).Done())
			for _, d := range nw.DHCP {
				dhcpSet.Elems = append(dhcpSet.Elems, nft.KeyElem(fmt.Sprintf("%q . %s", nw.Bridge, d), nft.Key(nft.IfName(nw.Bridge), d.AsSlice())))
			}
		}
		for _, g := range p.Groups {
			groups[g] = true
		}
	}
	sort.Slice(zones, func(i, j int) bool { return zones[i].Text < zones[j].Text })
	sort.Slice(dhcpSet.Elems, func(i, j int) bool { return dhcpSet.Elems[i].Text < dhcpSet.Elems[j].Text })
	names := slices.Sorted(maps.Keys(groups))
	egress, ingress, groupChains, sets := groupRules(f, names)
	fw.Sets = append(fw.Sets, sets...)
	fw.Chains = []*nft.Chain{
		{Name: "prerouting", Hook: &nft.Hook{Type: nftables.ChainTypeFilter, Hooknum: *nftables.ChainHookPrerouting, Priority: zonePriority}, Rules: zones},
		// After conntrack (-200), before the bridge forward hook: frames
		// of established connections on bothnia's bridges are marked so
		// that the bridge forward chain skips their dispatch lookups.
		// Only bothnia's bridges: a host's other traffic keeps its marks.
		{Name: "established", Hook: &nft.Hook{Type: nftables.ChainTypeFilter, Hooknum: *nftables.ChainHookPrerouting, Priority: -150}, Rules: []nft.Rule{
			nft.R().InSet(setBridges, false, nft.FIifname).CtState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED, "established,related").MarkSet(markEstablished).Accept(),
			// A frame out of a VXLAN tunnel keeps the outer packet's
			// mark: only this chain may say "established".
			nft.R().InSet(setBridges, false, nft.FIifname).MarkMaskEq(0xffffffff, markEstablished).MarkSet(0).Done(),
		}},
		{Name: "forward", Hook: &nft.Hook{Type: nftables.ChainTypeFilter, Hooknum: *nftables.ChainHookForward, Priority: 0}, Rules: []nft.Rule{
			// The node routes nothing from or into its networks' bridges:
			// a routed packet meets neither port's groups (Neutron's
			// linuxbridge layout lets it through in the same way).
			nft.R().InSet(setBridges, false, nft.FIifname).MarkMaskEq(outMask, outNode).MarkMaskNeq(0xffffffff, markEstablished).Counter().Drop(),
			nft.R().InSet(setBridges, true, nft.FIifname).InSet(setBridges, false, nft.FOifname).Counter().Drop(),
			// What neither comes from nor goes to bothnia's bridges is
			// not its to judge: on a Knox host, the networks Neutron's
			// linuxbridge agent keeps (their taps unknown to bothnia, and
			// marked so in the bridge family) pass to Neutron's rules.
			nft.R().InSet(setBridges, true, nft.FIifname).Accept(),
			// Fail closed: a tap on a bridge of bothnia's that is neither
			// a secured port nor an open one (plugged before its rules
			// are in) sends and receives nothing.
			nft.R().InSet(setBridges, false, nft.FIifname).MarkMaskEq(inMask, inMark(idUnknown)).Counter().Drop(),
			nft.R().InSet(setBridges, false, nft.FIifname).MarkMaskEq(outMask, outMark(idUnknown)).Counter().Drop(),
			nft.R().Jump(chFromPort),
		}},
		// A VM reaches the node itself only as its anti-spoofing and
		// egress groups would let it reach anything else.
		{Name: "input", Hook: &nft.Hook{Type: nftables.ChainTypeFilter, Hooknum: *nftables.ChainHookInput, Priority: 0}, Rules: []nft.Rule{
			nft.R().InSet(setBridges, true, nft.FIifname).Accept(),
			nft.R().MarkMaskEq(inMask, inMark(idUnknown)).Counter().Drop(),
			nft.R().Jump(chFromPort),
		}},
		{Name: chFromPort, Rules: egressRules()},
		{Name: chEgress, Rules: egress},
		{Name: chToPort, Rules: ingressRules()},
		{Name: chIngress, Rules: ingress},
	}
	fw.Chains = append(fw.Chains, groupChains...)
	for _, pe := range cache.update(f, ports) {
		pe.addTo(rs)
	}
	return rs
}

// PortElems are the set elements one port adds to a node: nothing else
// about a port is in the ruleset.
type PortElems map[string]map[string][]nft.Elem // table -> set -> elements

func portElems(f *Fabric, p *Port) PortElems {
	tap := nft.IfName(p.Name)
	// One element for the port's name, shared (elements are never
	// changed in place) by the sets keyed by it alone.
	self := nft.KeyElem(strconv.Quote(p.Name), tap)
	l2 := map[string][]nft.Elem{
		setPorts:   {self},
		setKnown:   {self},
		mapInMarks: {nft.IfMarkElem(p.Name, inMark(p.ID))},
	}
	for k := 0; k < idBits; k++ {
		if p.ID&(1<<k) != 0 {
			l2[outBitSet(k)] = append(l2[outBitSet(k)], self)
		}
	}
	// The spoofing sets are interval sets, which refuse overlapping
	// elements (the kernel answers EEXIST, and the whole transaction
	// fails): a pair inside another pair of the same MAC is left out.
	byMAC := map[string][]netip.Prefix{}
	for _, pr := range p.Pairs {
		byMAC[pr.MAC] = append(byMAC[pr.MAC], pr.Prefix)
	}
	for _, m := range slices.Sorted(maps.Keys(byMAC)) {
		l2[setMACs] = append(l2[setMACs], nft.KeyElem(fmt.Sprintf("%q . %s", p.Name, m), nft.Key(tap, nft.MAC(m))))
		l2[setARPMACs] = append(l2[setARPMACs], nft.KeyElem(fmt.Sprintf("%q . %s . %s", p.Name, m, m), nft.Key(tap, nft.MAC(m), nft.MAC(m))))
		// IPv6 link-local (from the MAC); :: has rules of its own.
		prefixes := append(slices.Clone(byMAC[m]), netip.PrefixFrom(plan.LinkLocal(m), 128))
		for _, pfx := range Normalize(prefixes) {
			set := spoofSet(pfx)
			l2[set] = append(l2[set], spoofElem(p.Name, m, pfx))
		}
	}
	fw := map[string][]nft.Elem{}
	for _, g := range p.Groups {
		fw[egSet(g)] = append(fw[egSet(g)], nft.MarkElem(inMark(p.ID)))
		fw[inSet(g)] = append(fw[inSet(g)], nft.MarkElem(outMark(p.ID)))
	}
	return PortElems{L2Table: l2, FWTable: fw}
}

// spoofSet is the anti-spoofing set of a pair's prefix: exact addresses
// in a hash set, wider prefixes in an interval set, per family.
func spoofSet(p netip.Prefix) string {
	switch v6, host := p.Addr().Is6(), p.IsSingleIP(); {
	case host && !v6:
		return setSpoof4
	case host:
		return setSpoof6
	case !v6:
		return setNets4
	default:
		return setNets6
	}
}

// spoofElem is a pair's element: an exact key for one address, a range
// for a wider prefix.
func spoofElem(tap, mac string, p netip.Prefix) nft.Elem {
	if p.IsSingleIP() {
		return nft.KeyElem(fmt.Sprintf("%q . %s . %s", tap, mac, p.Addr()), nft.Key(nft.IfName(tap), nft.MAC(mac), p.Addr().AsSlice()))
	}
	first, last := p.Masked().Addr(), nft.LastAddr(p)
	return nft.ConcatElem(fmt.Sprintf("%q . %s . %s", tap, mac, p),
		nft.Key(nft.IfName(tap), nft.MAC(mac), first.AsSlice()),
		nft.Key(nft.IfName(tap), nft.MAC(mac), last.AsSlice()))
}

func (pe PortElems) addTo(rs *nft.Ruleset) {
	for table, sets := range pe {
		t := rs.Table(table)
		for name, es := range sets {
			if s := t.Set(name); s != nil {
				s.Elems = append(s.Elems, es...)
			}
		}
	}
}
