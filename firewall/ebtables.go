package firewall

// The iptables layout's ebtables part: Neutron's ARP and MAC protection
// per port (nat PREROUTING), tags filtered into secured ports (nat
// POSTROUTING), and what is not IP kept from unknown taps (filter
// FORWARD).

import (
	"fmt"
	"slices"
	"strings"
)

const (
	ebUnknownIn  = iptPrefix + "unknown-in"
	ebUnknownOut = iptPrefix + "unknown-out"
)

// ebUnknown are the ebtables chains that keep a tap the firewall does not
// know (plugged before its rules are in) from exchanging anything but IP
// with the node's ports and uplinks: ARP above all, which iptables never
// sees. IP is left to the known-in and known-out chains, which see the
// bridge. Both sides of a frame are known in the filter table's FORWARD
// chain only; ebtables here cannot name the bridge (--logical-in needs
// "meta ibrname", which this kernel lacks), but a known port is on one of
// bothnia's bridges, so the unknown tap is too.
func ebUnknown(f *Fabric, node string) []IPTChain {
	var known []string
	for _, p := range f.Node(node) {
		known = append(known, p.Name)
	}
	known = append(append(known, f.OpenOn(node)...), f.Uplinks()...)
	slices.Sort(known)
	known = slices.Compact(known)
	in := IPTChain{Name: ebUnknownIn, Rules: []IPTRule{{"-p IPv4 -j RETURN"}, {"-p IPv6 -j RETURN"}}}
	out := IPTChain{Name: ebUnknownOut, Rules: []IPTRule{{"-p IPv4 -j RETURN"}, {"-p IPv6 -j RETURN"}}}
	for _, k := range known {
		in.Rules = append(in.Rules, IPTRule{"-i " + k + " -j RETURN"})
		out.Rules = append(out.Rules, IPTRule{"-o " + k + " -j RETURN"})
	}
	for _, k := range known {
		in.Rules = append(in.Rules, IPTRule{"-o " + k + " -j DROP"})
		out.Rules = append(out.Rules, IPTRule{"-i " + k + " -j DROP"})
	}
	return []IPTChain{in, out}
}

func ebChain(p *Port) string { return "bothnia-" + portSuffix(p) }

// ebTagged filters what the bridge sends into a secured port: no VLAN tag
// but a priority tag around IPv4 or IPv6, so a tagged frame from an
// unsecured port or the uplink cannot pass the groups unseen (the inet
// hooks never see what they cannot parse as IP).
const ebTagged = "bothnia-tagged"

func ebTaggedChain() IPTChain {
	return IPTChain{Name: ebTagged, Rules: []IPTRule{
		{"-p 802_1Q --vlan-id 0 --vlan-encap 0800 -j RETURN"},
		{"-p 802_1Q --vlan-id 0 --vlan-encap 86DD -j RETURN"},
		{"-p 802_1Q -j DROP"},
		{"-p S-TAG -j DROP"},
	}}
}

// ebPort is Neutron's ARP and MAC spoofing protection for one port: ARP
// only for its pairs, IPv4 and IPv6 only from its MACs (their addresses
// are checked by the source chains), a priority tag (VID 0) only around
// IPv4 or IPv6, nothing else: no other ethertype, no other tag. Rules are
// written as ebtables-nft-save prints them, so a read-back compares equal.
func ebPort(p *Port) IPTChain {
	c := IPTChain{Name: ebChain(p)}
	for _, pr := range p.Pairs {
		if pr.Prefix.Addr().Is4() {
			// A host prefix is printed without its /32.
			src := pr.Prefix.String()
			if pr.Prefix.IsSingleIP() {
				src = pr.Prefix.Addr().String()
			}
			c.Rules = append(c.Rules, IPTRule{fmt.Sprintf("-p ARP -s %s --arp-ip-src %s --arp-mac-src %s -j RETURN", pr.MAC, src, pr.MAC)})
		}
	}
	c.Rules = append(c.Rules, IPTRule{"-p ARP -j DROP"})
	for _, m := range p.MACs() {
		c.Rules = append(c.Rules,
			IPTRule{"-p IPv4 -s " + m + " -j RETURN"},
			IPTRule{"-p IPv6 -s " + m + " -j RETURN"},
			IPTRule{"-p 802_1Q -s " + m + " --vlan-id 0 --vlan-encap 0800 -j RETURN"},
			IPTRule{"-p 802_1Q -s " + m + " --vlan-id 0 --vlan-encap 86DD -j RETURN"})
	}
	c.Rules = append(c.Rules, IPTRule{"-j DROP"})
	return c
}

func writeEb(b *strings.Builder, table string, chains []IPTChain, jumps []IPTRule) {
	fmt.Fprintf(b, "*%s\n", table)
	for _, c := range chains {
		fmt.Fprintf(b, ":%s RETURN\n", c.Name)
	}
	for _, j := range jumps {
		fmt.Fprintf(b, "-A %s\n", j.Args)
	}
	for _, c := range chains {
		for _, rule := range c.Rules {
			fmt.Fprintf(b, "-A %s %s\n", c.Name, rule.Args)
		}
	}
}
