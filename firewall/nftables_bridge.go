package firewall

// Rules of the bridge family table, which sees each frame's ports:
// anti-spoofing, neighbour discovery, and the taps it does not know.

import (
	"fmt"
	"net/netip"
	"strconv"

	"github.com/google/nftables/expr"

	"github.com/bothnia/bothnia/nft"
)

// antiSpoof lets a secured port send only what its pairs allow. It runs in
// the bridge family, before conntrack, so spoofed packets never create state.
func antiSpoof() []nft.Rule {
	rs := []nft.Rule{
		// A tagged frame from a VM would leave a VLAN uplink double-tagged,
		// into another segment at the far end. A priority tag (VID 0)
		// around IPv4 or IPv6 is let through: the kernel has moved it out
		// of the way, so the rules below check what it carries (meta
		// protocol is the inner type). ebtables cannot look into a tagged
		// ARP packet, so neither renderer lets one through.
		nft.R().EtherType(TPIDSTag).Counter().Drop(),
		nft.R().EtherType(TPIDCTag).VlanIDNeq(0).Counter().Drop(),
		nft.R().EtherType(TPIDCTag).MetaProtocolNot(nft.EtherIPv4, nft.EtherIPv6).Counter().Drop(),
		// A VM must not answer as a DHCP server, v4 or v6: clients take a
		// datagram to their port for an answer whatever its source port.
		nft.R().MetaProtocol(nft.EtherIPv4).L4Proto(17).Dport("udp", 68, 68).Counter().Drop(),
		nft.R().MetaProtocol(nft.EtherIPv6).L4Proto(17).Dport("udp", 546, 546).Counter().Drop(),
		// Neighbour solicitations and advertisements meet OVN's checks.
		nft.R().MetaProtocol(nft.EtherIPv6).L4Proto(58).ICMPType(true, icmpv6NS, -1).Jump(chND),
		nft.R().MetaProtocol(nft.EtherIPv6).L4Proto(58).ICMPType(true, icmpv6NA, -1).Jump(chND),
		// DHCP discover/request come from 0.0.0.0 before the VM has an
		// address, and only to the broadcast address.
		nft.R().MetaProtocol(nft.EtherIPv4).IPSaddr(netip.MustParsePrefix("0.0.0.0/32")).IPDaddr(netip.MustParsePrefix("255.255.255.255/32")).
			L4Proto(17).Sport("udp", 68).Dport("udp", 67, 67).InSet(setMACs, false, nft.FIifname, nft.FEtherSrc).Return(),
		nft.R().MetaProtocol(nft.EtherIPv4).InSet(setSpoof4, false, nft.FIifname, nft.FEtherSrc, nft.FIPSrc).Return(),
		nft.R().MetaProtocol(nft.EtherIPv4).InSet(setNets4, false, nft.FIifname, nft.FEtherSrc, nft.FIPSrc).Return(),
		// ARP: the sender MAC is the frame's source MAC, and that MAC with
		// the sender address is one of the port's pairs.
		nft.R().MetaProtocol(nft.EtherARP).InSet(setARPMACs, false, nft.FIifname, nft.FEtherSrc, nft.FArpSha).
			InSet(setSpoof4, false, nft.FIifname, nft.FEtherSrc, nft.FArpSpa).Return(),
		nft.R().MetaProtocol(nft.EtherARP).InSet(setARPMACs, false, nft.FIifname, nft.FEtherSrc, nft.FArpSha).
			InSet(setNets4, false, nft.FIifname, nft.FEtherSrc, nft.FArpSpa).Return(),
		// From :: only duplicate address detection and MLD, to link scope.
	}
	for _, t := range ndUnspec {
		rs = append(rs, nft.R().MetaProtocol(nft.EtherIPv6).IPSaddr(netip.MustParsePrefix("::/128")).IPDaddr(linkScope6).
			L4Proto(58).ICMPType(true, t, -1).InSet(setMACs, false, nft.FIifname, nft.FEtherSrc).Return())
	}
	return append(rs,
		nft.R().MetaProtocol(nft.EtherIPv6).InSet(setSpoof6, false, nft.FIifname, nft.FEtherSrc, nft.FIP6Src).Return(),
		nft.R().MetaProtocol(nft.EtherIPv6).InSet(setNets6, false, nft.FIifname, nft.FEtherSrc, nft.FIP6Src).Return(),
		// ARP that failed its check, counted apart from other spoofing.
		nft.R().MetaProtocol(nft.EtherARP).Counter().Drop(),
		nft.R().Counter().Drop())
}

// ndRules pass the neighbour solicitations and advertisements a port may
// send (see Port.ndRefused): the 24-byte message alone or with one option
// naming the frame's source MAC (the arp-macs set pairs each of the port's
// MACs with itself), a nonce in a solicitation from ::, and an
// advertisement's target among the port's addresses with that MAC. The
// option and the target sit at fixed offsets only without extension
// headers, so a message with any is dropped.
func ndRules() []nft.Rule {
	length := func(b *nft.B, n byte) *nft.B {
		// IPv6 payload length and next header together.
		return b.PayloadEq(fmt.Sprintf("ip6 plen %d ip6 nexthdr ipv6-icmp", n), expr.PayloadBaseNetworkHeader, 4, []byte{0, n, 58})
	}
	opt := func(b *nft.B, typ byte) *nft.B {
		return b.PayloadEq(fmt.Sprintf("@th,192,16 0x%02x01", typ), expr.PayloadBaseTransportHeader, 24, []byte{typ, 1})
	}
	optMAC := nft.PayloadField("@th,208,48", expr.PayloadBaseTransportHeader, 26, 6)
	target := nft.PayloadField("@th,64,128", expr.PayloadBaseTransportHeader, 8, 16)
	ns := func() *nft.B { return nft.R().ICMPType(true, icmpv6NS, -1) }
	na := func() *nft.B { return nft.R().ICMPType(true, icmpv6NA, -1) }
	rs := []nft.Rule{
		length(ns(), 24).Return(),
		opt(length(ns(), 32), ndOptSLL).InSet(setARPMACs, false, nft.FIifname, nft.FEtherSrc, optMAC).Return(),
		opt(length(ns(), 32).IPSaddr(netip.MustParsePrefix("::/128")), ndOptNonce).Return(),
	}
	for _, set := range []string{setSpoof6, setNets6} {
		rs = append(rs,
			length(na(), 24).InSet(set, false, nft.FIifname, nft.FEtherSrc, target).Return(),
			opt(length(na(), 32), ndOptTLL).InSet(setARPMACs, false, nft.FIifname, nft.FEtherSrc, optMAC).
				InSet(set, false, nft.FIifname, nft.FEtherSrc, target).Return())
	}
	return append(rs, nft.R().Counter().Drop())
}

// unknownTap matches a frame from (or to) a tap that is not a port the
// firewall knows on this node: plugged before its rules are in.
func unknownTap(out bool) *nft.B {
	if out {
		return nft.R().OifnamePrefix("tap").InSet(setKnown, true, nft.FOifname)
	}
	return nft.R().IifnamePrefix("tap").InSet(setKnown, true, nft.FIifname)
}

// ifElems are the elements of an ifname set.
func ifElems(names []string) []nft.Elem {
	out := make([]nft.Elem, 0, len(names))
	for _, n := range names {
		out = append(out, nft.KeyElem(strconv.Quote(n), nft.IfName(n)))
	}
	return out
}
