package firewall

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/bothnia/bothnia/nft"
)

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
)

func inMark(id uint16) uint32  { return uint32(id) << 16 }
func outMark(id uint16) uint32 { return uint32(id) }

func srcChain(p *Port) string  { return fmt.Sprintf("src-%d", p.ID) }
func markChain(p *Port) string { return fmt.Sprintf("mark-%d", p.ID) }
func egChain(p *Port) string   { return fmt.Sprintf("egress-%d", p.ID) }
func inChain(p *Port) string   { return fmt.Sprintf("ingress-%d", p.ID) }
func sgChain(g string, ingress bool) string {
	if ingress {
		return "sg-" + g + "-in"
	}
	return "sg-" + g + "-out"
}
func setName(g string, v6 bool) string {
	if v6 {
		return "rg-" + g + "-v6"
	}
	return "rg-" + g + "-v4"
}

// toPort continues with the destination port's ingress checks once the
// source port's egress checks passed.
const toPort = "to-port"

// RenderNFT renders one node's firewall. Per packet the work is two map
// lookups and the rules of the ports' own groups, whatever the number of
// ports or group members:
//
//	bridge prerouting: iifname vmap -> src-<port>: IP/MAC/ARP anti-spoofing
//	bridge forward:    mark = in-port ID << 16 | out-port ID
//	inet prerouting:   ct zone per bridge (one per network)
//	inet forward:      mark vmap -> egress-<in port>  -> sg-<group>-out -> goto to-port
//	                   mark vmap -> ingress-<out port> -> sg-<group>-in  -> accept
//
// Neutron's egress chain RETURNs to a shared chain that ACCEPTs; here an
// allowed egress goes straight to the ingress checks of the destination,
// so that an unconditional allow (the default egress rule, the seed's
// "surprising" -j RETURN) can never skip the invalid-state drop.
func RenderNFT(f *Fabric, node string) *nft.Ruleset {
	ports := f.Node(node)
	l2 := &nft.Table{Family: nftables.TableFamilyBridge, Name: L2Table}
	fw := &nft.Table{Family: nftables.TableFamilyINet, Name: FWTable}
	rs := &nft.Ruleset{Tables: []*nft.Table{l2, fw}}

	srcPorts := &nft.Set{Name: "src-ports", KeyType: nftables.TypeIFName, DataType: nftables.TypeVerdict, Map: true}
	inMarks := &nft.Set{Name: "in-marks", KeyType: nftables.TypeIFName, DataType: nftables.TypeMark, Map: true}
	outPorts := &nft.Set{Name: "out-ports", KeyType: nftables.TypeIFName, DataType: nftables.TypeVerdict, Map: true}
	l2.Sets = []*nft.Set{srcPorts, inMarks, outPorts}
	l2.Chains = []*nft.Chain{
		{Name: "prerouting", Hook: &nft.Hook{Type: nftables.ChainTypeFilter, Hooknum: *nftables.ChainHookPrerouting, Priority: -300},
			Rules: []nft.Rule{nft.R().IifVmap(srcPorts.Name).Done()}},
		// Priority -200 runs before br_netfilter (-1) hands the packet to
		// the inet forward hook.
		{Name: "forward", Hook: &nft.Hook{Type: nftables.ChainTypeFilter, Hooknum: *nftables.ChainHookForward, Priority: -200},
			Rules: []nft.Rule{
				nft.R().MarkSet(0).Done(),
				nft.R().MarkSetIifMap(inMarks.Name).Done(),
				nft.R().OifVmap(outPorts.Name).Done(),
			}},
	}

	egress := &nft.Set{Name: "egress-ports", KeyType: nftables.TypeMark, DataType: nftables.TypeVerdict, Map: true}
	ingress := &nft.Set{Name: "ingress-ports", KeyType: nftables.TypeMark, DataType: nftables.TypeVerdict, Map: true}
	fw.Sets = []*nft.Set{egress, ingress}

	var zones []nft.Rule
	seenNet := map[string]bool{}
	for _, p := range ports {
		if !seenNet[p.Network] {
			seenNet[p.Network] = true
			nw := f.Networks[p.Network]
			zones = append(zones, nft.R().Iifname(nw.Bridge).CtZoneSet(nw.Zone).Done())
		}
	}
	sort.Slice(zones, func(i, j int) bool { return zones[i].Text < zones[j].Text })
	fw.Chains = []*nft.Chain{
		{Name: "prerouting", Hook: &nft.Hook{Type: nftables.ChainTypeFilter, Hooknum: *nftables.ChainHookPrerouting, Priority: -300}, Rules: zones},
		{Name: "forward", Hook: &nft.Hook{Type: nftables.ChainTypeFilter, Hooknum: *nftables.ChainHookForward, Priority: 0},
			Rules: []nft.Rule{
				nft.R().MarkVmap(inMask, egress.Name).Done(),
				nft.R().MarkVmap(outMask, ingress.Name).Done(),
			}},
		{Name: toPort, Rules: []nft.Rule{nft.R().MarkVmap(outMask, ingress.Name).Done(), nft.R().Accept()}},
	}

	groups := map[string]bool{}
	for i := range ports {
		po := portObjects(f, &ports[i])
		po.addTo(rs)
		for _, g := range ports[i].Groups {
			groups[g] = true
		}
	}

	var names []string
	for g := range groups {
		names = append(names, g)
	}
	sort.Strings(names)
	chains, sets := groupObjects(f, names)
	fw.Chains = append(fw.Chains, chains...)
	fw.Sets = append(fw.Sets, sets...)
	return rs
}

// antiSpoof lets a port send only what its pairs allow. It runs in the
// bridge family, before conntrack, so spoofed packets never create state.
func antiSpoof(p *Port) []nft.Rule {
	rs := []nft.Rule{
		// A VM must not answer as a DHCP server.
		nft.R().MetaProtocol(nft.EtherIPv4).L4Proto(17).Sport("udp", 67).Dport("udp", 68, 68).Drop(),
		// DHCP discover/request come from 0.0.0.0 before the VM has an address.
		nft.R().MetaProtocol(nft.EtherIPv4).EtherSaddr(nft.MAC(p.MAC), p.MAC).IPSaddr(netip.MustParsePrefix("0.0.0.0/32")).
			L4Proto(17).Sport("udp", 68).Dport("udp", 67, 67).Return(),
	}
	macs := map[string]bool{}
	for _, pr := range p.Pairs {
		mac := nft.MAC(pr.MAC)
		if pr.Prefix.Addr().Is4() {
			rs = append(rs,
				nft.R().MetaProtocol(nft.EtherIPv4).EtherSaddr(mac, pr.MAC).IPSaddr(pr.Prefix).Return(),
				nft.R().MetaProtocol(nft.EtherARP).EtherSaddr(mac, pr.MAC).ArpSha(mac, pr.MAC).ArpSpa(pr.Prefix).Return())
		} else {
			rs = append(rs, nft.R().MetaProtocol(nft.EtherIPv6).EtherSaddr(mac, pr.MAC).IPSaddr(pr.Prefix).Return())
		}
		macs[pr.MAC] = true
	}
	var ms []string
	for m := range macs {
		ms = append(ms, m)
	}
	sort.Strings(ms)
	for _, m := range ms {
		// IPv6 link-local (from the MAC) and the unspecified address (DAD).
		rs = append(rs,
			nft.R().MetaProtocol(nft.EtherIPv6).EtherSaddr(nft.MAC(m), m).IPSaddr(netip.PrefixFrom(LinkLocal(m), 128)).Return(),
			nft.R().MetaProtocol(nft.EtherIPv6).EtherSaddr(nft.MAC(m), m).IPSaddr(netip.MustParsePrefix("::/128")).Return())
	}
	return append(rs, nft.R().Counter().Drop())
}

// ICMPv6 types a port needs for neighbour discovery and MLD; router
// advertisements may only come in, never out of a VM.
var ndTypes = []int{130, 131, 132, 133, 135, 136, 143}

func egressRules(p *Port) []nft.Rule {
	rs := []nft.Rule{
		nft.R().NFProto(false).L4Proto(17).Sport("udp", 68).Dport("udp", 67, 67).Goto(toPort),
		nft.R().NFProto(false).L4Proto(17).Sport("udp", 67).Dport("udp", 68, 68).Drop(),
		nft.R().CtState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED, "established,related").Goto(toPort),
		nft.R().CtState(expr.CtStateBitINVALID, "invalid").Counter().Drop(),
		nft.R().NFProto(true).L4Proto(58).ICMPType(true, 134, -1).Drop(),
	}
	for _, t := range ndTypes {
		rs = append(rs, nft.R().NFProto(true).L4Proto(58).ICMPType(true, t, -1).Goto(toPort))
	}
	for _, g := range p.Groups {
		rs = append(rs, nft.R().Jump(sgChain(g, false)))
	}
	return append(rs, nft.R().Counter().Drop())
}

func ingressRules(f *Fabric, p *Port) []nft.Rule {
	rs := []nft.Rule{
		nft.R().CtState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED, "established,related").Accept(),
	}
	for _, d := range f.Networks[p.Network].DHCP {
		rs = append(rs, nft.R().NFProto(false).IPSaddr(netip.PrefixFrom(d, 32)).L4Proto(17).Sport("udp", 67).Dport("udp", 68, 68).Accept())
	}
	rs = append(rs, nft.R().CtState(expr.CtStateBitINVALID, "invalid").Counter().Drop())
	for _, t := range append([]int{134}, ndTypes...) {
		rs = append(rs, nft.R().NFProto(true).L4Proto(58).ICMPType(true, t, -1).Accept())
	}
	for _, g := range p.Groups {
		rs = append(rs, nft.R().Jump(sgChain(g, true)))
	}
	return append(rs, nft.R().Counter().Drop())
}

// sgRule is the match of one security group rule.
func sgRule(r Rule) *nft.B {
	b := nft.R().NFProto(r.V6)
	if r.RemotePrefix.IsValid() {
		if r.Ingress {
			b.IPSaddr(r.RemotePrefix)
		} else {
			b.IPDaddr(r.RemotePrefix)
		}
	}
	if r.RemoteGroup != "" {
		b.IPAddrSet(r.Ingress, r.V6, setName(r.RemoteGroup, r.V6))
	}
	if r.Proto >= 0 {
		b.L4Proto(r.Proto)
	}
	switch {
	case r.PortMin > 0:
		b.Dport(protoNames[r.Proto], r.PortMin, r.PortMax)
	case (r.Proto == 1 || r.Proto == 58) && r.ICMPType >= 0:
		b.ICMPType(r.Proto == 58, r.ICMPType, r.ICMPCode)
	}
	return b
}

var protoNames = map[int]string{6: "tcp", 17: "udp", 132: "sctp"}

// PortObjects are the chains and map elements one port adds to a node.
type PortObjects struct {
	L2Chains, FWChains []*nft.Chain
	L2Elems, FWElems   map[string][]nft.Elem // by map name
}

func portObjects(f *Fabric, p *Port) PortObjects {
	return PortObjects{
		L2Chains: []*nft.Chain{{Name: srcChain(p), Rules: antiSpoof(p)}, {Name: markChain(p), Rules: []nft.Rule{nft.R().MarkOr(outMark(p.ID)).Done()}}},
		FWChains: []*nft.Chain{{Name: egChain(p), Rules: egressRules(p)}, {Name: inChain(p), Rules: ingressRules(f, p)}},
		L2Elems: map[string][]nft.Elem{
			"src-ports": {nft.IfVerdictElem(p.Name, expr.VerdictJump, srcChain(p))},
			"in-marks":  {nft.IfMarkElem(p.Name, inMark(p.ID))},
			"out-ports": {nft.IfVerdictElem(p.Name, expr.VerdictJump, markChain(p))},
		},
		FWElems: map[string][]nft.Elem{
			"egress-ports":  {nft.MarkVerdictElem(inMark(p.ID), egChain(p))},
			"ingress-ports": {nft.MarkVerdictElem(outMark(p.ID), inChain(p))},
		},
	}
}

func (po PortObjects) addTo(rs *nft.Ruleset) {
	l2, fw := rs.Table(L2Table), rs.Table(FWTable)
	l2.Chains = append(l2.Chains, po.L2Chains...)
	fw.Chains = append(fw.Chains, po.FWChains...)
	for name, es := range po.L2Elems {
		l2.Set(name).Elems = append(l2.Set(name).Elems, es...)
	}
	for name, es := range po.FWElems {
		fw.Set(name).Elems = append(fw.Set(name).Elems, es...)
	}
}

// groupObjects renders the chains of the named groups and the member sets
// their remote-group rules use.
func groupObjects(f *Fabric, names []string) ([]*nft.Chain, []*nft.Set) {
	var chains []*nft.Chain
	sets := map[string]bool{}
	for _, g := range names {
		grp := f.Groups[g]
		in, out := &nft.Chain{Name: sgChain(g, true)}, &nft.Chain{Name: sgChain(g, false)}
		for _, r := range grp.Rules {
			if r.RemoteGroup != "" {
				sets[setName(r.RemoteGroup, r.V6)] = true
			}
			if r.Ingress {
				in.Rules = append(in.Rules, sgRule(r).Accept())
			} else {
				out.Rules = append(out.Rules, sgRule(r).Goto(toPort))
			}
		}
		chains = append(chains, in, out)
	}
	var out []*nft.Set
	for _, sn := range sortedNames(sets) {
		v6 := strings.HasSuffix(sn, "-v6")
		g := strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(sn, "rg-"), "-v4"), "-v6")
		st := &nft.Set{Name: sn, KeyType: nftables.TypeIPAddr, Interval: true}
		if v6 {
			st.KeyType = nftables.TypeIP6Addr
		}
		for _, m := range f.Sets[g] {
			if m.Addr().Is6() == v6 {
				st.Elems = append(st.Elems, nft.PrefixElem(m))
			}
		}
		out = append(out, st)
	}
	return chains, out
}

func sortedNames(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
