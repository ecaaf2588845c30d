package nft

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// B builds a rule's text and expressions side by side, so the two cannot
// drift apart. Every match loads into register 1 and compares.
type B struct {
	text  []string
	exprs []expr.Any
}

// R starts a rule.
func R() *B { return &B{} }

func (b *B) add(text string, es ...expr.Any) *B {
	if text != "" {
		b.text = append(b.text, text)
	}
	b.exprs = append(b.exprs, es...)
	return b
}

func (b *B) cmp(op expr.CmpOp, data []byte) expr.Any {
	return &expr.Cmp{Op: op, Register: 1, Data: data}
}

// IfName pads an interface name as the kernel compares it.
func IfName(n string) []byte {
	b := make([]byte, 16)
	copy(b, n)
	return b
}

// Iifname matches the input interface.
func (b *B) Iifname(n string) *B {
	return b.add("iifname \""+n+"\"", &expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, b.cmp(expr.CmpOpEq, IfName(n)))
}

// IifnamePrefix matches input interfaces whose name begins with p
// (nft's "tap*").
func (b *B) IifnamePrefix(p string) *B {
	return b.add(fmt.Sprintf("iifname %q", p+"*"), &expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, b.cmp(expr.CmpOpEq, []byte(p)))
}

// OifnamePrefix matches output interfaces whose name begins with p.
func (b *B) OifnamePrefix(p string) *B {
	return b.add(fmt.Sprintf("oifname %q", p+"*"), &expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1}, b.cmp(expr.CmpOpEq, []byte(p)))
}

// PayloadEq matches len(data) bytes at off from a header against data;
// text is how nft would print the match.
func (b *B) PayloadEq(text string, base expr.PayloadBase, off uint32, data []byte) *B {
	return b.add(text, b.payload(base, off, uint32(len(data))), b.cmp(expr.CmpOpEq, data))
}

// Ethertype names for MetaProtocol.
const (
	EtherIPv4 = 0x0800
	EtherARP  = 0x0806
	EtherIPv6 = 0x86dd
)

var etherNames = map[uint16]string{EtherIPv4: "ip", EtherARP: "arp", EtherIPv6: "ip6"}

// MetaProtocol matches the ethertype (bridge family).
func (b *B) MetaProtocol(et uint16) *B {
	return b.add("meta protocol "+etherNames[et], &expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1},
		b.cmp(expr.CmpOpEq, binaryutil.BigEndian.PutUint16(et)))
}

// MetaProtocolNot matches frames whose (inner) ethertype is neither of two.
func (b *B) MetaProtocolNot(a, c uint16) *B {
	return b.add(fmt.Sprintf("meta protocol != { %s, %s }", etherNames[a], etherNames[c]),
		&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1},
		b.cmp(expr.CmpOpNeq, binaryutil.BigEndian.PutUint16(a)),
		b.cmp(expr.CmpOpNeq, binaryutil.BigEndian.PutUint16(c)))
}

// NFProto matches IPv4 or IPv6 (inet family).
func (b *B) NFProto(v6 bool) *B {
	p, name := byte(unix.NFPROTO_IPV4), "ipv4"
	if v6 {
		p, name = unix.NFPROTO_IPV6, "ipv6"
	}
	return b.add("meta nfproto "+name, &expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, b.cmp(expr.CmpOpEq, []byte{p}))
}

var protoNames = map[int]string{1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 132: "sctp", 33: "dccp", 136: "udplite"}

// L4Proto matches the transport protocol.
func (b *B) L4Proto(p int) *B {
	name, ok := protoNames[p]
	if !ok {
		name = fmt.Sprint(p)
	}
	return b.add("meta l4proto "+name, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, b.cmp(expr.CmpOpEq, []byte{byte(p)}))
}

func (b *B) payload(base expr.PayloadBase, off, n uint32) expr.Any {
	return &expr.Payload{DestRegister: 1, Base: base, Offset: off, Len: n}
}

// EtherType matches the frame's outermost ethertype (a TPID if tagged:
// the kernel rebuilds an offloaded tag for link-layer reads).
func (b *B) EtherType(t uint16) *B {
	return b.add(fmt.Sprintf("ether type 0x%04x", t), b.payload(expr.PayloadBaseLLHeader, 12, 2),
		b.cmp(expr.CmpOpEq, binaryutil.BigEndian.PutUint16(t)))
}

// VlanIDNeq matches an outer VLAN tag whose VID is not id.
func (b *B) VlanIDNeq(id uint16) *B {
	return b.add(fmt.Sprintf("vlan id != %d", id), b.payload(expr.PayloadBaseLLHeader, 14, 2),
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 2, Mask: []byte{0x0f, 0xff}, Xor: []byte{0, 0}},
		b.cmp(expr.CmpOpNeq, binaryutil.BigEndian.PutUint16(id)))
}

// EtherSaddr matches the source MAC.
func (b *B) EtherSaddr(mac []byte, text string) *B {
	return b.add("ether saddr "+text, b.payload(expr.PayloadBaseLLHeader, 6, 6), b.cmp(expr.CmpOpEq, mac))
}

// prefix matches len(addr) bytes at off of the network header against p.
func (b *B) prefix(what string, off uint32, p netip.Prefix) *B {
	a := p.Addr().AsSlice()
	n := uint32(len(a))
	es := []expr.Any{b.payload(expr.PayloadBaseNetworkHeader, off, n)}
	if p.Bits() < p.Addr().BitLen() {
		mask := netip.PrefixFrom(p.Addr(), p.Bits()).Masked()
		es = append(es, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: prefixMask(p.Bits(), int(n)), Xor: make([]byte, n)})
		a = mask.Addr().AsSlice()
	}
	es = append(es, b.cmp(expr.CmpOpEq, a))
	return b.add(what+" "+p.String(), es...)
}

func prefixMask(bits, n int) []byte {
	m := make([]byte, n)
	for i := 0; i < bits; i++ {
		m[i/8] |= 0x80 >> (i % 8)
	}
	return m
}

// IPSaddr matches the IPv4 or IPv6 source against a prefix.
func (b *B) IPSaddr(p netip.Prefix) *B {
	if p.Addr().Is4() {
		return b.prefix("ip saddr", 12, p)
	}
	return b.prefix("ip6 saddr", 8, p)
}

// IPDaddr matches the destination against a prefix.
func (b *B) IPDaddr(p netip.Prefix) *B {
	if p.Addr().Is4() {
		return b.prefix("ip daddr", 16, p)
	}
	return b.prefix("ip6 daddr", 24, p)
}

// IPAddrSet matches the source (or destination) against a named set.
func (b *B) IPAddrSet(src, v6 bool, set string) *B {
	off, n, fam, dir := uint32(16), uint32(4), "ip", "daddr"
	if src {
		off, dir = 12, "saddr"
	}
	if v6 {
		off, n, fam = 24, 16, "ip6"
		if src {
			off = 8
		}
	}
	return b.add(fmt.Sprintf("%s %s @%s", fam, dir, set), b.payload(expr.PayloadBaseNetworkHeader, off, n),
		&expr.Lookup{SourceRegister: 1, SetName: set})
}

// ArpSha matches an ARP packet's sender MAC (Ethernet/IPv4 ARP).
func (b *B) ArpSha(mac []byte, text string) *B {
	return b.add("arp saddr ether "+text, b.payload(expr.PayloadBaseNetworkHeader, 8, 6), b.cmp(expr.CmpOpEq, mac))
}

// ArpSpa matches an ARP packet's sender address against a prefix.
func (b *B) ArpSpa(p netip.Prefix) *B { return b.prefix("arp saddr ip", 14, p) }

// Sport matches a transport source port.
func (b *B) Sport(proto string, port uint16) *B {
	return b.add(fmt.Sprintf("%s sport %d", proto, port), b.payload(expr.PayloadBaseTransportHeader, 0, 2),
		b.cmp(expr.CmpOpEq, binaryutil.BigEndian.PutUint16(port)))
}

// Dport matches a transport destination port or range.
func (b *B) Dport(proto string, lo, hi int) *B {
	ld := b.payload(expr.PayloadBaseTransportHeader, 2, 2)
	if lo == hi {
		return b.add(fmt.Sprintf("%s dport %d", proto, lo), ld, b.cmp(expr.CmpOpEq, binaryutil.BigEndian.PutUint16(uint16(lo))))
	}
	return b.add(fmt.Sprintf("%s dport %d-%d", proto, lo, hi), ld,
		&expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: binaryutil.BigEndian.PutUint16(uint16(lo)), ToData: binaryutil.BigEndian.PutUint16(uint16(hi))})
}

// TCPNotSYN matches a TCP segment that is not a bare SYN: of FIN, SYN,
// RST and ACK, anything but SYN alone.
func (b *B) TCPNotSYN() *B {
	const finSynRstAck, syn = 0x17, 0x02
	return b.add("tcp flags & (fin | syn | rst | ack) != syn", b.payload(expr.PayloadBaseTransportHeader, 13, 1),
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{finSynRstAck}, Xor: []byte{0}},
		b.cmp(expr.CmpOpNeq, []byte{syn}))
}

// ICMPType matches the ICMP (or ICMPv6) type and, if code >= 0, code.
func (b *B) ICMPType(v6 bool, typ, code int) *B {
	name := "icmp"
	if v6 {
		name = "icmpv6"
	}
	b.add(fmt.Sprintf("%s type %d", name, typ), b.payload(expr.PayloadBaseTransportHeader, 0, 1), b.cmp(expr.CmpOpEq, []byte{byte(typ)}))
	if code >= 0 {
		b.add(fmt.Sprintf("%s code %d", name, code), b.payload(expr.PayloadBaseTransportHeader, 1, 1), b.cmp(expr.CmpOpEq, []byte{byte(code)}))
	}
	return b
}

// CtState matches any of the conntrack states (bits of expr.CtStateBit*).
func (b *B) CtState(bits uint32, text string) *B {
	return b.add("ct state "+text, &expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: make([]byte, 4)},
		b.cmp(expr.CmpOpNeq, make([]byte, 4)))
}

// CtZoneSet puts the packet in a conntrack zone.
func (b *B) CtZoneSet(z uint16) *B {
	return b.add(fmt.Sprintf("ct zone set %d", z), &expr.Immediate{Register: 1, Data: binaryutil.NativeEndian.PutUint16(z)},
		&expr.Ct{Key: expr.CtKeyZONE, Register: 1, SourceRegister: true})
}

// MarkSet sets the packet mark.
func (b *B) MarkSet(v uint32) *B {
	return b.add(fmt.Sprintf("meta mark set 0x%08x", v), &expr.Immediate{Register: 1, Data: binaryutil.NativeEndian.PutUint32(v)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1})
}

// MarkOr ors bits into the packet mark.
func (b *B) MarkOr(v uint32) *B {
	return b.add(fmt.Sprintf("meta mark set meta mark | 0x%08x", v),
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(^v), Xor: binaryutil.NativeEndian.PutUint32(v)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1})
}

// MarkSetIifMap sets the mark from a map keyed by input interface.
func (b *B) MarkSetIifMap(m string) *B {
	return b.add("meta mark set iifname map @"+m, &expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: m},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1})
}

// IifVmap dispatches on the input interface.
func (b *B) IifVmap(m string) *B {
	return b.add("iifname vmap @"+m, &expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true, SetName: m})
}

// OifVmap dispatches on the output interface.
func (b *B) OifVmap(m string) *B {
	return b.add("oifname vmap @"+m, &expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true, SetName: m})
}

// MarkVmap dispatches on the mark under a mask.
func (b *B) MarkVmap(mask uint32, m string) *B {
	return b.add(fmt.Sprintf("meta mark & 0x%08x vmap @%s", mask, m),
		append(maskedMark(mask), &expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true, SetName: m})...)
}

// Counter counts packets and bytes.
func (b *B) Counter() *B { return b.add("counter", &expr.Counter{}) }

// Verdicts end a rule.
func (b *B) Accept() Rule       { return b.verdict("accept", expr.VerdictAccept, "") }
func (b *B) Drop() Rule         { return b.verdict("drop", expr.VerdictDrop, "") }
func (b *B) Return() Rule       { return b.verdict("return", expr.VerdictReturn, "") }
func (b *B) Jump(c string) Rule { return b.verdict("jump "+c, expr.VerdictJump, c) }
func (b *B) Goto(c string) Rule { return b.verdict("goto "+c, expr.VerdictGoto, c) }
func (b *B) Done() Rule         { return Rule{Text: strings.Join(b.text, " "), Exprs: b.exprs} }

func (b *B) verdict(text string, k expr.VerdictKind, chain string) Rule {
	b.add(text, &expr.Verdict{Kind: k, Chain: chain})
	return b.Done()
}

// Elements.

// IfElem is an ifname-keyed element with a verdict (a vmap entry).
func IfVerdictElem(ifname string, k expr.VerdictKind, chain string) Elem {
	v := "jump"
	if k == expr.VerdictGoto {
		v = "goto"
	}
	return Elem{Text: fmt.Sprintf("%q : %s %s", ifname, v, chain), Key: IfName(ifname), Verdict: &expr.Verdict{Kind: k, Chain: chain}}
}

// IfMarkElem maps an interface to a mark.
func IfMarkElem(ifname string, mark uint32) Elem {
	return Elem{Text: fmt.Sprintf("%q : 0x%08x", ifname, mark), Key: IfName(ifname), Val: binaryutil.NativeEndian.PutUint32(mark)}
}

// MarkVerdictElem maps a mark to a verdict.
func MarkVerdictElem(mark uint32, chain string) Elem {
	return Elem{Text: fmt.Sprintf("0x%08x : jump %s", mark, chain), Key: binaryutil.NativeEndian.PutUint32(mark),
		Verdict: &expr.Verdict{Kind: expr.VerdictJump, Chain: chain}}
}

// PrefixElem is an interval-set element covering a prefix.
func PrefixElem(p netip.Prefix) Elem {
	start := p.Masked().Addr()
	end := lastAddr(p).Next()
	e := Elem{Text: p.String(), Key: start.AsSlice()}
	if end.IsValid() {
		e.KeyEnd = end.AsSlice()
	} else {
		// The range runs to the top of the address space; the kernel
		// takes an all-zero end as "open".
		e.KeyEnd = make([]byte, len(e.Key))
	}
	return e
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(a)*8; i++ {
		a[i/8] |= 0x80 >> (i % 8)
	}
	out, _ := netip.AddrFromSlice(a)
	return out
}

// MAC parses a MAC string into bytes; the input must be valid.
func MAC(s string) []byte {
	b := make([]byte, 6)
	if hw, err := net.ParseMAC(s); err == nil && len(hw) == 6 {
		copy(b, hw)
	}
	return b
}

// Field is one part of a concatenated set key, loaded into consecutive
// 32-bit registers.
type Field struct {
	Text string
	load func(reg uint32) expr.Any
	Len  uint32
}

// PayloadField is a key part of n bytes at off from a header.
func PayloadField(text string, base expr.PayloadBase, off, n uint32) Field {
	return Field{text, func(r uint32) expr.Any { return &expr.Payload{DestRegister: r, Base: base, Offset: off, Len: n} }, n}
}

// Fields for concatenated keys.
var (
	FIifname = Field{"iifname", func(r uint32) expr.Any { return &expr.Meta{Key: expr.MetaKeyIIFNAME, Register: r} }, 16}
	FOifname = Field{"oifname", func(r uint32) expr.Any { return &expr.Meta{Key: expr.MetaKeyOIFNAME, Register: r} }, 16}
	// The bridge of the input and output port (bridge family).
	FIbrname  = Field{"meta ibrname", func(r uint32) expr.Any { return &expr.Meta{Key: expr.MetaKeyBRIIIFNAME, Register: r} }, 16}
	FObrname  = Field{"meta obrname", func(r uint32) expr.Any { return &expr.Meta{Key: expr.MetaKeyBRIOIFNAME, Register: r} }, 16}
	FEtherSrc = Field{"ether saddr", func(r uint32) expr.Any {
		return &expr.Payload{DestRegister: r, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6}
	}, 6}
	FIPSrc = Field{"ip saddr", func(r uint32) expr.Any {
		return &expr.Payload{DestRegister: r, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4}
	}, 4}
	FIP6Src = Field{"ip6 saddr", func(r uint32) expr.Any {
		return &expr.Payload{DestRegister: r, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 16}
	}, 16}
	FArpSha = Field{"arp saddr ether", func(r uint32) expr.Any {
		return &expr.Payload{DestRegister: r, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 6}
	}, 6}
	FArpSpa = Field{"arp saddr ip", func(r uint32) expr.Any {
		return &expr.Payload{DestRegister: r, Base: expr.PayloadBaseNetworkHeader, Offset: 14, Len: 4}
	}, 4}
)

// reg32 is the first 32-bit register (NFT_REG32_00); a concatenation fills
// consecutive ones, each field rounded up to whole registers.
const reg32 = 8

// InSet matches when the concatenation of fields is (or, inverted, is not)
// in the named set.
func (b *B) InSet(set string, invert bool, fields ...Field) *B {
	var names []string
	var es []expr.Any
	reg := uint32(reg32)
	for _, f := range fields {
		names = append(names, f.Text)
		es = append(es, f.load(reg))
		reg += (f.Len + 3) / 4
	}
	op := ""
	if invert {
		op = "!= "
	}
	es = append(es, &expr.Lookup{SourceRegister: reg32, SetName: set, Invert: invert})
	return b.add(strings.Join(names, " . ")+" "+op+"@"+set, es...)
}

// maskedMark loads the mark under a mask into register 1.
func maskedMark(mask uint32) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(mask), Xor: make([]byte, 4)}}
}

// MarkInSet matches when the mark under a mask is in the named set.
func (b *B) MarkInSet(mask uint32, set string) *B {
	return b.add(fmt.Sprintf("meta mark & 0x%08x @%s", mask, set), append(maskedMark(mask), &expr.Lookup{SourceRegister: 1, SetName: set})...)
}

// MarkMaskEq matches when the mark under a mask equals v.
func (b *B) MarkMaskEq(mask, v uint32) *B {
	return b.add(fmt.Sprintf("meta mark & 0x%08x == 0x%08x", mask, v), append(maskedMark(mask), b.cmp(expr.CmpOpEq, binaryutil.NativeEndian.PutUint32(v)))...)
}

// MarkMaskNeq matches when the mark under a mask is not v.
func (b *B) MarkMaskNeq(mask, v uint32) *B {
	return b.add(fmt.Sprintf("meta mark & 0x%08x != 0x%08x", mask, v), append(maskedMark(mask), b.cmp(expr.CmpOpNeq, binaryutil.NativeEndian.PutUint32(v)))...)
}

// Key builds a concatenated key: each part padded to whole registers.
func Key(parts ...[]byte) []byte {
	var k []byte
	for _, p := range parts {
		k = append(k, p...)
		for len(k)%4 != 0 {
			k = append(k, 0)
		}
	}
	return k
}

// ConcatElem is an element of a concatenated interval set: the key, and
// the inclusive end of the range (equal to the key where there is none).
func ConcatElem(text string, key, keyEnd []byte) Elem {
	return Elem{Text: text, Key: key, KeyEnd: keyEnd}
}

// KeyElem is an element of a plain set.
func KeyElem(text string, key []byte) Elem { return Elem{Text: text, Key: key} }

// MarkElem is an element of a set of marks.
func MarkElem(mark uint32) Elem {
	return Elem{Text: fmt.Sprintf("0x%08x", mark), Key: binaryutil.NativeEndian.PutUint32(mark)}
}

// LastAddr is the last address of a prefix.
func LastAddr(p netip.Prefix) netip.Addr { return lastAddr(p) }
