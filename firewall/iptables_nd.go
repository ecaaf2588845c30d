package firewall

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/bothnia/bothnia/nft"
	"github.com/bothnia/bothnia/plan"
)

// iptND is ndRules in ip6tables: u32 reads the payload length and next
// header (bytes 4-6 of the IPv6 header), an option's type and length
// (bytes 64-65, after the 24-byte message) and MAC (66-71), and the
// target (48-63). Each of the port's IPv6 pairs and link-local addresses
// comes with its MAC, so an advertisement's target is the port's with the
// frame's MAC.
func iptND(p *Port) IPTChain {
	c := IPTChain{Name: IPTChainName("n", p)}
	const (
		len24 = "4&0xffffff00=0x00183a00"
		len32 = "4&0xffffff00=0x00203a00"
	)
	optWith := func(typ byte, mac string) string {
		m := nft.MAC(mac)
		return fmt.Sprintf("64=0x%02x01%02x%02x&&68=0x%02x%02x%02x%02x", typ, m[0], m[1], m[2], m[3], m[4], m[5])
	}
	ns := "-p ipv6-icmp -m icmp6 --icmpv6-type 135"
	na := "-p ipv6-icmp -m icmp6 --icmpv6-type 136"
	c.Rules = append(c.Rules, IPTRule{fmt.Sprintf("%s -m u32 --u32 %q -j RETURN", ns, len24)})
	for _, m := range p.MACs() {
		c.Rules = append(c.Rules, IPTRule{fmt.Sprintf("%s -m mac --mac-source %s -m u32 --u32 %q -j RETURN", ns, strings.ToUpper(m), len32+"&&"+optWith(ndOptSLL, m))})
	}
	c.Rules = append(c.Rules, IPTRule{fmt.Sprintf("-s ::/128 %s -m u32 --u32 %q -j RETURN", ns, len32+"&&64>>16=0x0e01")})
	for _, t := range ndTargets(p) {
		c.Rules = append(c.Rules,
			IPTRule{fmt.Sprintf("%s -m mac --mac-source %s -m u32 --u32 %q -j RETURN", na, strings.ToUpper(t.MAC), len24+"&&"+u32Prefix(48, t.Prefix))},
			IPTRule{fmt.Sprintf("%s -m mac --mac-source %s -m u32 --u32 %q -j RETURN", na, strings.ToUpper(t.MAC), len32+"&&"+optWith(ndOptTLL, t.MAC)+"&&"+u32Prefix(48, t.Prefix))})
	}
	c.Rules = append(c.Rules, IPTRule{"-j DROP"})
	return c
}

// ndTargets are the IPv6 prefixes a port may advertise, each with its
// MAC: its IPv6 pairs and the link-local address of each MAC.
func ndTargets(p *Port) []Pair {
	var out []Pair
	for _, pr := range p.Pairs {
		if pr.Prefix.Addr().Is6() {
			out = append(out, pr)
		}
	}
	for _, m := range p.MACs() {
		out = append(out, Pair{netip.PrefixFrom(plan.LinkLocal(m), 128), m})
	}
	return out
}

// u32Prefix tests a prefix at a byte offset, a 32-bit word at a time.
func u32Prefix(off int, p netip.Prefix) string {
	a := p.Masked().Addr().AsSlice()
	var tests []string
	for w := 0; w*32 < p.Bits(); w++ {
		bits := min(p.Bits()-w*32, 32)
		mask := uint32(0xffffffff) << (32 - bits)
		v := uint32(a[4*w])<<24 | uint32(a[4*w+1])<<16 | uint32(a[4*w+2])<<8 | uint32(a[4*w+3])
		tests = append(tests, fmt.Sprintf("%d&0x%08x=0x%08x", off+4*w, mask, v&mask))
	}
	if len(tests) == 0 {
		return fmt.Sprintf("%d&0x0=0x0", off)
	}
	return strings.Join(tests, "&&")
}
