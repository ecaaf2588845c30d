package firewall

// The inet table's stateful checks: what a secured port sends (egress),
// what reaches one (ingress), and each security group's own chain.

import (
	"maps"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/bothnia/bothnia/nft"
)

// egressRules check what a secured port sends; traffic from elsewhere goes
// straight to the destination's checks. INVALID is dropped before the
// group rules (Neutron drops it after them, so an allow-all egress rule
// there lets INVALID through), and so is a new TCP connection that does
// not begin with a SYN (newTCPNotSYN).
func egressRules() []nft.Rule {
	rs := []nft.Rule{
		nft.R().MarkMaskEq(inMask, 0).Goto(chToPort),
		nft.R().NFProto(false).L4Proto(17).Sport("udp", 68).Dport("udp", 67, 67).Goto(chToPort),
		nft.R().NFProto(true).L4Proto(17).Sport("udp", 546).Dport("udp", 547, 547).Goto(chToPort),
		nft.R().CtState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED, "established,related").Goto(chToPort),
		nft.R().CtState(expr.CtStateBitINVALID, "invalid").Counter().Drop(),
		newTCPNotSYN(),
		nft.R().NFProto(true).L4Proto(58).ICMPType(true, icmpv6RA, -1).Counter().Drop(),
	}
	for _, t := range ndEgress {
		rs = append(rs, nft.R().NFProto(true).L4Proto(58).ICMPType(true, t, -1).Goto(chToPort))
	}
	return append(rs, nft.R().Jump(chEgress), nft.R().Counter().Drop())
}

// newTCPNotSYN drops a TCP segment that would open a connection without
// being a SYN. Conntrack takes a mid-stream segment it has no entry for as
// a new connection (nf_conntrack_tcp_loose), so after a revocation deleted
// a stream's entry, a segment from the side still allowed to send (the
// server answering, under the default allow-all egress) opened an entry
// in its own direction, and the revoked side's segments passed as its
// replies: the stream was back. Neutron lets such a segment through.
func newTCPNotSYN() nft.Rule {
	return nft.R().CtState(expr.CtStateBitNEW, "new").L4Proto(6).TCPNotSYN().Counter().Drop()
}

// ingressRules check what reaches a secured port. Router advertisements
// are not among the fixed ICMPv6 types: no port has an IPv6 fixed address
// (Neutron admits RAs only into those, from the subnet's router).
func ingressRules() []nft.Rule {
	rs := []nft.Rule{
		nft.R().MarkMaskEq(outMask, 0).Accept(),
		// To the node itself: the sender's checks were all.
		nft.R().MarkMaskEq(outMask, outNode).Accept(),
		nft.R().CtState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED, "established,related").Accept(),
		nft.R().NFProto(false).InSet(setDHCP, false, nft.FIifname, nft.FIPSrc).L4Proto(17).Sport("udp", 67).Dport("udp", 68, 68).Accept(),
		nft.R().CtState(expr.CtStateBitINVALID, "invalid").Counter().Drop(),
		newTCPNotSYN(),
	}
	for _, t := range ndIngress {
		rs = append(rs, nft.R().NFProto(true).L4Proto(58).ICMPType(true, t, -1).Accept())
	}
	return append(rs, nft.R().Jump(chIngress), nft.R().Counter().Drop())
}

// groupRules renders, for each named group, a dispatch rule gated on the
// port being in the group and a chain of its own with the group's rules
// (so a rule change rewrites that chain alone), and the sets they use.
func groupRules(f *Fabric, names []string) (egress, ingress []nft.Rule, chains []*nft.Chain, sets []*nft.Set) {
	remote := map[string]bool{}
	for _, g := range names {
		sets = append(sets, &nft.Set{Name: egSet(g), KeyType: nftables.TypeMark}, &nft.Set{Name: inSet(g), KeyType: nftables.TypeMark})
		in, out := &nft.Chain{Name: "sg-" + g + "-in"}, &nft.Chain{Name: "sg-" + g + "-out"}
		egress = append(egress, nft.R().MarkInSet(inMask, egSet(g)).Jump(out.Name))
		ingress = append(ingress, nft.R().MarkInSet(outMask, inSet(g)).Jump(in.Name))
		for _, r := range f.Groups[g].Rules {
			if r.RemoteGroup != "" {
				remote[setName(r.RemoteGroup, r.V6)] = true
			}
			if r.Ingress {
				in.Rules = append(in.Rules, sgRule(nft.R(), r).Accept())
			} else {
				out.Rules = append(out.Rules, sgRule(nft.R(), r).Goto(chToPort))
			}
		}
		chains = append(chains, out, in)
	}
	for _, sn := range slices.Sorted(maps.Keys(remote)) {
		v6 := sn[len(sn)-2:] == "v6"
		g := sn[len("rg-") : len(sn)-len("-v4")]
		st := &nft.Set{Name: sn, KeyType: nftables.TypeIPAddr, Interval: true}
		if v6 {
			st.KeyType = nftables.TypeIP6Addr
		}
		for _, m := range f.Sets[g] {
			if m.Addr().Is6() == v6 {
				st.Elems = append(st.Elems, nft.PrefixElem(m))
			}
		}
		sets = append(sets, st)
	}
	return egress, ingress, chains, sets
}

// sgRule appends the match of one security group rule.
func sgRule(b *nft.B, r Rule) *nft.B {
	b.NFProto(r.V6)
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

var protoNames = map[int]string{6: "tcp", 17: "udp", 132: "sctp", 33: "dccp", 136: "udplite"}
