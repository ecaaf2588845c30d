package firewall

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/bothnia/bothnia/plan"
)

// Ethertypes and TPIDs a frame can carry.
const (
	EtherIPv4 = 0x0800
	EtherARP  = 0x0806
	EtherIPv6 = 0x86dd
	TPIDCTag  = 0x8100 // 802.1Q
	TPIDSTag  = 0x88a8 // 802.1ad
)

// Frame is one frame a port puts on a node's bridge, as the reference
// evaluator sees it: the whole pipeline, not only the group rules, so the
// kernel can be tested against it packet by packet.
type Frame struct {
	// From and To are the sending and the receiving secured ports; nil is
	// anything unfiltered: a port without port security, the router, a
	// DHCP server, the uplink to other nodes.
	From, To *Port
	SrcMAC   string
	// Tags are the 802.1Q/802.1ad tags in front of EtherType, outermost
	// first.
	Tags      []Tag
	EtherType uint16
	// ARP sender hardware and protocol address.
	ARPSha string
	ARPSpa netip.Addr
	// IPv4/IPv6.
	Src, Dst     netip.Addr
	Proto        int // 1 icmp, 6 tcp, 17 udp, 58 icmpv6, ...
	SPort, DPort int // transport ports; for ICMP the type and code
	// Conntrack's view. Invalid: INVALID everywhere (a TCP segment with
	// SYN and FIN). Established: the sender's node has seen the other
	// direction of the flow; DestEstablished: the receiver's node has
	// (the same node when both ports are on one). Each node tracks what
	// its own firewall let through: a reply to a flow that left the
	// sender's node but was refused at the far one is established at the
	// first and new at the second, as in any distributed Neutron. ICMP
	// messages that cannot open a connection (an echo reply or an error
	// with nothing to relate to) are INVALID where they are not
	// established, without being told.
	Invalid, Established, DestEstablished bool
	// NotSYN: a TCP segment that is not a bare SYN. Where it is not
	// established, conntrack would take it for a new connection (its loose
	// pick-up of streams it has no entry for); bothnia drops it there.
	NotSYN bool
	// A neighbour solicitation or advertisement (ICMPv6 135, 136): its
	// target, invalid for a message too short to hold one, and its options
	// in order.
	NDTarget netip.Addr
	NDOpts   []NDOpt
	// ToNode: the frame is addressed to the node itself (the bridge's MAC
	// and an address of the node); To is nil. Routed: addressed to the
	// bridge's MAC but to an address elsewhere, so the node would route
	// it; To is the port it would reach.
	ToNode, Routed bool
}

// NDOpt is one neighbour discovery option of one 8-byte unit: a source
// (1) or target (2) link-layer address, a nonce (14), or any other type.
type NDOpt struct {
	Type int
	MAC  string // the option's six bytes, as a MAC
}

// Neighbour discovery message types and option types.
const (
	icmpv6NS   = 135
	icmpv6NA   = 136
	ndOptSLL   = 1
	ndOptTLL   = 2
	ndOptNonce = 14
)

// Tag is one VLAN tag.
type Tag struct {
	TPID uint16
	VID  int
}

// Stage is one step of the decision: where, what matched, the outcome.
type Stage struct {
	Name   string // anti-spoofing, egress, ingress
	Object string // the port, rule or group that decided
	Result string // pass, accept, drop
}

// Verdict is the evaluator's answer with the stages that led to it.
type Verdict struct {
	Allowed bool
	Stages  []Stage
}

func (v *Verdict) step(name, object, result string) {
	v.Stages = append(v.Stages, Stage{name, object, result})
}

func (v *Verdict) drop(name, object string) Verdict {
	v.step(name, object, "drop")
	v.Allowed = false
	return *v
}

func (v *Verdict) String() string {
	s := ""
	for _, st := range v.Stages {
		s += fmt.Sprintf("%s: %s: %s\n", st.Name, st.Object, st.Result)
	}
	return s
}

// ICMPv6 types a secured port may always send (neighbour discovery, MLD,
// router solicitation) and receive (MLD query, NS, NA: Neutron's
// ICMPV6_ALLOWED_INGRESS_TYPES); router advertisements never leave a VM,
// and come in only through a group rule. Neutron lets a port send any
// ICMPv6 but RAs; bothnia holds the rest (echo, errors) to the groups.
var (
	ndEgress  = []int{130, 131, 132, 133, 135, 136, 143}
	ndIngress = []int{130, 135, 136}
	// A port may send from :: only for DAD and MLD (Neutron's
	// ICMPV6_ALLOWED_UNSPEC_ADDR_TYPES), to a link-scope multicast group.
	ndUnspec   = []int{131, 135, 143}
	linkScope6 = netip.MustParsePrefix("ff02::/16")
)

const icmpv6RA = 134

// Decide walks a frame through the firewall of its source port (if
// secured) and of its destination port (if secured), in the renderers'
// order, and says whether it arrives.
func (f *Fabric) Decide(fr Frame) Verdict {
	v := Verdict{Allowed: true}
	if fr.From != nil {
		if !f.antiSpoof(&v, fr) {
			return v
		}
		if fr.EtherType == EtherARP {
			// ARP is bridged only: nothing below sees it.
			return v
		}
		if !f.egress(&v, fr) {
			return v
		}
	}
	if fr.Routed {
		return v.drop("node", "the node routes nothing from or to a network's bridge")
	}
	if fr.ToNode {
		v.step("node", "the node itself", "accept")
		return v
	}
	if fr.To != nil && badTags(fr) {
		return v.drop("bridge", "port "+fr.To.Name+" ("+fr.To.VM+"): tagged frame into a secured port")
	}
	if fr.EtherType == EtherARP {
		return v
	}
	if fr.To != nil {
		f.ingress(&v, fr)
	}
	return v
}

// antiSpoof is the bridge stage: tags, then addresses by ethertype.
func (f *Fabric) antiSpoof(v *Verdict, fr Frame) bool {
	p := fr.From
	obj := "port " + p.Name + " (" + p.VM + ")"
	// A tagged frame would leave the node as a second tag on a VLAN
	// uplink (VLAN hopping).
	if badTags(fr) {
		v.drop("anti-spoofing", obj+": tagged frame")
		return false
	}
	macOK := slices.Contains(p.MACs(), fr.SrcMAC)
	switch fr.EtherType {
	case EtherARP:
		// As Neutron's ebtables rules: the sender MAC is the frame's source,
		// and that MAC with the sender address is one of the port's pairs.
		if fr.ARPSha != fr.SrcMAC || !p.pairAllows(fr.SrcMAC, fr.ARPSpa) {
			v.drop("anti-spoofing", obj+": ARP sender not among the port's pairs")
			return false
		}
	case EtherIPv4:
		// Clients take a datagram to port 68 for a server's answer,
		// whatever its source port.
		if fr.Proto == 17 && fr.DPort == 68 {
			v.drop("anti-spoofing", obj+": DHCP to a client port from a VM")
			return false
		}
		dhcpClient := fr.Src == netip.IPv4Unspecified() && fr.Dst == netip.AddrFrom4([4]byte{255, 255, 255, 255}) &&
			fr.Proto == 17 && fr.SPort == 68 && fr.DPort == 67
		if !(macOK && dhcpClient) && !p.pairAllows(fr.SrcMAC, fr.Src) {
			v.drop("anti-spoofing", obj+": source "+fr.SrcMAC+" "+fr.Src.String()+" not among the port's pairs")
			return false
		}
	case EtherIPv6:
		if fr.Proto == 17 && fr.DPort == 546 {
			v.drop("anti-spoofing", obj+": DHCPv6 to a client port from a VM")
			return false
		}
		if fr.Proto == 58 && (fr.SPort == icmpv6NS || fr.SPort == icmpv6NA) {
			if why := p.ndRefused(fr); why != "" {
				v.drop("anti-spoofing", obj+": "+why)
				return false
			}
		}
		if fr.Src == netip.IPv6Unspecified() {
			if !macOK || !linkScope6.Contains(fr.Dst) || fr.Proto != 58 || !slices.Contains(ndUnspec, fr.SPort) {
				v.drop("anti-spoofing", obj+": from :: only DAD and MLD to ff02::/16")
				return false
			}
			break
		}
		if !(macOK && fr.Src == plan.LinkLocal(fr.SrcMAC)) && !p.pairAllows(fr.SrcMAC, fr.Src) {
			v.drop("anti-spoofing", obj+": source "+fr.SrcMAC+" "+fr.Src.String()+" not among the port's pairs")
			return false
		}
	default:
		v.drop("anti-spoofing", obj+fmt.Sprintf(": ethertype %#04x", fr.EtherType))
		return false
	}
	v.step("anti-spoofing", obj, "pass")
	return true
}

// ndRefused says why a neighbour solicitation or advertisement may not
// leave the port, or "" if it may. As OVN's port security
// (build_port_security_nd): an advertisement's target is one of the
// port's addresses with the frame's MAC, and a link-layer option names
// the frame's source MAC, so no VM can rebind another's address in its
// neighbours' caches. Stricter than OVN: the message is exactly the
// 24-byte header or that and one option (a solicitation from :: may carry
// a nonce instead), which is all any stack sends.
func (p *Port) ndRefused(fr Frame) string {
	if !fr.NDTarget.IsValid() {
		return "neighbour discovery message too short"
	}
	switch len(fr.NDOpts) {
	case 0:
	case 1:
		o := fr.NDOpts[0]
		switch {
		case fr.SPort == icmpv6NS && o.Type == ndOptSLL, fr.SPort == icmpv6NA && o.Type == ndOptTLL:
			if o.MAC != fr.SrcMAC || !slices.Contains(p.MACs(), fr.SrcMAC) {
				return "neighbour discovery link-layer option " + o.MAC + " is not the frame's source " + fr.SrcMAC
			}
		case fr.SPort == icmpv6NS && o.Type == ndOptNonce && fr.Src == netip.IPv6Unspecified():
		default:
			return fmt.Sprintf("neighbour discovery option %d not allowed here", o.Type)
		}
	default:
		return "neighbour discovery message with more than one option"
	}
	if fr.SPort == icmpv6NA && !p.pairAllows(fr.SrcMAC, fr.NDTarget) &&
		!(fr.NDTarget == plan.LinkLocal(fr.SrcMAC) && slices.Contains(p.MACs(), fr.SrcMAC)) {
		return "neighbour advertisement for " + fr.NDTarget.String() + ", not an address of the port with " + fr.SrcMAC
	}
	return ""
}

// badTags reports a frame with any tag but a single priority tag (802.1Q,
// VID 0) around IPv4 or IPv6, which neither renderer lets into or out of
// a secured port.
func badTags(fr Frame) bool {
	if len(fr.Tags) == 0 {
		return false
	}
	return fr.Tags[0].TPID != TPIDCTag || fr.Tags[0].VID != 0 || len(fr.Tags) > 1 ||
		(fr.EtherType != EtherIPv4 && fr.EtherType != EtherIPv6)
}

// egress is what the source port may send, past anti-spoofing.
func (f *Fabric) egress(v *Verdict, fr Frame) bool {
	v6 := fr.EtherType == EtherIPv6
	obj := "port " + fr.From.Name + " (" + fr.From.VM + ")"
	switch {
	case !v6 && fr.Proto == 17 && fr.SPort == 68 && fr.DPort == 67,
		v6 && fr.Proto == 17 && fr.SPort == 546 && fr.DPort == 547:
		v.step("egress", obj+": DHCP client", "pass")
		return true
	case fr.Established:
		v.step("egress", obj+": established", "pass")
		return true
	case fr.Invalid || icmpInvalid(fr):
		v.drop("egress", obj+": invalid")
		return false
	case fr.Proto == 6 && fr.NotSYN:
		v.drop("egress", obj+": a TCP segment other than a SYN cannot open a connection")
		return false
	case v6 && fr.Proto == 58 && fr.SPort == icmpv6RA:
		v.drop("egress", obj+": router advertisement from a VM")
		return false
	case v6 && fr.Proto == 58 && slices.Contains(ndEgress, fr.SPort):
		v.step("egress", obj+": neighbour discovery", "pass")
		return true
	}
	if g, i, ok := f.groupMatch(fr.From, fr, false, fr.Dst); ok {
		v.step("egress", fmt.Sprintf("security group %s rule %d (%s)", g, i, f.Groups[g].Rules[i]), "pass")
		return true
	}
	v.drop("egress", obj+": no egress rule of its groups matches")
	return false
}

// ingress is what the destination port may receive.
func (f *Fabric) ingress(v *Verdict, fr Frame) {
	v6 := fr.EtherType == EtherIPv6
	p := fr.To
	obj := "port " + p.Name + " (" + p.VM + ")"
	switch {
	case fr.DestEstablished:
		v.step("ingress", obj+": established", "accept")
		return
	case !v6 && fr.Proto == 17 && fr.SPort == 67 && fr.DPort == 68 && slices.Contains(f.Networks[p.Network].DHCP, fr.Src):
		v.step("ingress", obj+": DHCP from the site's server", "accept")
		return
	case fr.Invalid || icmpInvalid(fr):
		v.drop("ingress", obj+": invalid")
		return
	case fr.Proto == 6 && fr.NotSYN:
		v.drop("ingress", obj+": a TCP segment other than a SYN cannot open a connection")
		return
	case v6 && fr.Proto == 58 && slices.Contains(ndIngress, fr.SPort):
		v.step("ingress", obj+": neighbour discovery", "accept")
		return
	}
	if g, i, ok := f.groupMatch(p, fr, true, fr.Src); ok {
		v.step("ingress", fmt.Sprintf("security group %s rule %d (%s)", g, i, f.Groups[g].Rules[i]), "accept")
		return
	}
	v.drop("ingress", obj+": no ingress rule of its groups matches")
}

func (f *Fabric) groupMatch(p *Port, fr Frame, ingress bool, remote netip.Addr) (string, int, bool) {
	for _, g := range p.Groups {
		grp := f.Groups[g]
		if grp == nil {
			continue
		}
		for i, r := range grp.Rules {
			if r.Ingress == ingress && f.matches(r, fr, remote) {
				return g, i, true
			}
		}
	}
	return "", 0, false
}

func (f *Fabric) matches(r Rule, fr Frame, remote netip.Addr) bool {
	if r.V6 != (fr.EtherType == EtherIPv6) {
		return false
	}
	if r.Proto >= 0 && r.Proto != fr.Proto {
		return false
	}
	if r.PortMin > 0 && (fr.DPort < r.PortMin || fr.DPort > r.PortMax) {
		return false
	}
	if (r.Proto == 1 || r.Proto == 58) && r.ICMPType >= 0 {
		if fr.SPort != r.ICMPType || (r.ICMPCode >= 0 && fr.DPort != r.ICMPCode) {
			return false
		}
	}
	if r.RemotePrefix.IsValid() && !r.RemotePrefix.Contains(remote) {
		return false
	}
	if r.RemoteGroup != "" {
		in := false
		for _, m := range f.Sets[r.RemoteGroup] {
			if m.Contains(remote) {
				in = true
				break
			}
		}
		if !in {
			return false
		}
	}
	return true
}

// pairAllows reports whether the port may send from (mac, a).
func (p *Port) pairAllows(mac string, a netip.Addr) bool {
	for _, pr := range p.Pairs {
		if pr.MAC == mac && pr.Prefix.Contains(a) {
			return true
		}
	}
	return false
}

// PortAt returns the secured port of a network that may send from a,
// or nil. The port's own address wins over another port's allowed pair.
func (f *Fabric) PortAt(network string, a netip.Addr) *Port {
	var pair *Port
	for i := range f.Ports {
		p := &f.Ports[i]
		if p.Network != network {
			continue
		}
		if p.IP == a {
			return p
		}
		if pair == nil && p.PairMAC(a) != "" {
			pair = p
		}
	}
	return pair
}

// PairMAC returns the MAC the port sends a from, or "" if none of its
// pairs covers a (the link-local address of its MACs included).
func (p *Port) PairMAC(a netip.Addr) string {
	for _, pr := range p.Pairs {
		if pr.Prefix.Contains(a) {
			return pr.MAC
		}
	}
	for _, m := range p.MACs() {
		if plan.LinkLocal(m) == a {
			return m
		}
	}
	return ""
}

// MACs returns the port's MAC and its allowed pairs' MACs, once each.
func (p *Port) MACs() []string {
	var out []string
	for _, pr := range p.Pairs {
		if !slices.Contains(out, pr.MAC) {
			out = append(out, pr.MAC)
		}
	}
	slices.Sort(out)
	return out
}

// Packet is a new connection's first packet from a port's own addresses,
// as check probes send it.
type Packet struct {
	Src, Dst netip.Addr
	Proto    int // 1 icmp, 6 tcp, 17 udp, 58 icmpv6
	Port     int // destination port, or ICMP type
	Code     int // ICMP code
}

// Frame returns the packet as a well-formed frame from one port to another.
func (pkt Packet) Frame(from, to *Port) Frame {
	fr := Frame{From: from, To: to, EtherType: EtherIPv4, Src: pkt.Src, Dst: pkt.Dst, Proto: pkt.Proto, SPort: 40000, DPort: pkt.Port}
	if pkt.Src.Is6() {
		fr.EtherType = EtherIPv6
	}
	if from != nil {
		fr.SrcMAC = from.MAC
	}
	if pkt.Proto == 1 || pkt.Proto == 58 {
		fr.SPort, fr.DPort = pkt.Port, pkt.Code
	}
	return fr
}

// Allows reports whether a new connection from one VM's port to another's
// (either may be nil: an unsecured port or an address outside the fabric)
// passes both firewalls.
func (f *Fabric) Allows(from, to *Port, pkt Packet) bool {
	return f.Decide(pkt.Frame(from, to)).Allowed
}

// ICMP types conntrack lets open a connection (echo, timestamp, info and
// address-mask requests; ICMPv6 echo and node information queries), and
// the ICMPv6 types it leaves untracked (neighbour discovery, MLD): any
// other ICMP message that belongs to no connection is INVALID.
var (
	icmpNew   = []int{8, 13, 15, 17}
	icmpv6New = []int{128, 139}
	// nf_conntrack_proto_icmpv6.c's noct_valid_new: a redirect (137) is
	// not among them, so conntrack marks it INVALID.
	icmpv6NoCT = []int{130, 131, 132, 133, 134, 135, 136, 143}
)

func icmpInvalid(fr Frame) bool {
	switch {
	case fr.EtherType == EtherIPv4 && fr.Proto == 1:
		return !slices.Contains(icmpNew, fr.SPort)
	case fr.EtherType == EtherIPv6 && fr.Proto == 58:
		return !slices.Contains(icmpv6New, fr.SPort) && !slices.Contains(icmpv6NoCT, fr.SPort)
	}
	return false
}

// String describes a rule as an operator writes it.
func (r Rule) String() string {
	dir, peer := "egress", "to"
	if r.Ingress {
		dir, peer = "ingress", "from"
	}
	eth := "IPv4"
	if r.V6 {
		eth = "IPv6"
	}
	parts := []string{dir, eth}
	switch {
	case r.Proto < 0:
		parts = append(parts, "any protocol")
	default:
		name := map[int]string{1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp", 33: "dccp", 136: "udplite"}[r.Proto]
		if name == "" {
			name = fmt.Sprintf("protocol %d", r.Proto)
		}
		parts = append(parts, name)
	}
	if r.PortMin > 0 {
		if r.PortMin == r.PortMax {
			parts = append(parts, fmt.Sprintf("port %d", r.PortMin))
		} else {
			parts = append(parts, fmt.Sprintf("ports %d-%d", r.PortMin, r.PortMax))
		}
	}
	if r.ICMPType >= 0 {
		parts = append(parts, fmt.Sprintf("type %d", r.ICMPType))
		if r.ICMPCode >= 0 {
			parts = append(parts, fmt.Sprintf("code %d", r.ICMPCode))
		}
	}
	switch {
	case r.RemoteGroup != "":
		parts = append(parts, peer+" members of "+r.RemoteGroup)
	case r.RemotePrefix.IsValid():
		parts = append(parts, peer+" "+r.RemotePrefix.String())
	default:
		parts = append(parts, peer+" anywhere")
	}
	return strings.Join(parts, " ")
}
