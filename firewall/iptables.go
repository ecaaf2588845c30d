package firewall

import (
	"fmt"
	"hash/fnv"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/bothnia/bothnia/plan"
)

// The iptables rendering keeps Neutron's linuxbridge layout, so operators
// who know `iptables -S` on a Neutron host read it at once, with bothnia's
// own prefix so that it never touches a Neutron agent's chains:
//
//	FORWARD -> bothnia-FORWARD: per port, physdev-in/-out -> bothnia-sg-chain
//	bothnia-sg-chain: physdev-out tapX -> bothnia-iX, physdev-in tapX -> bothnia-oX, ACCEPT
//	bothnia-oX: DHCP client RETURN, -> bothnia-sX (IP/MAC pairs), DHCP server DROP,
//	            ESTABLISHED RETURN, INVALID DROP, egress rules RETURN, -> fallback
//	bothnia-iX: ESTABLISHED RETURN, DHCP from the servers RETURN, INVALID DROP,
//	            ingress rules RETURN, -> fallback
//	raw PREROUTING -> bothnia-PREROUTING: CT zone per bridge
//	ipset hash:net per remote group; ebtables nat PREROUTING: ARP and MAC per port;
//	ebtables filter FORWARD: nothing but IP between an unknown tap and a known one
//
// IPv6 has the same chains in ip6tables, as Neutron renders them.
//
// Dispatch walks every port's rules linearly: that is the cost the
// benchmark compares with the nftables maps. Unlike the seed (and like
// current Neutron) INVALID is dropped before the group rules, so an
// allow-everything egress rule cannot let INVALID packets through.
const iptPrefix = "bothnia-"

// IPTRule is one rule: the arguments after "-A chain", without the
// comment that carries its hash.
type IPTRule struct{ Args string }

// IPTChain is one chain and its rules in order.
type IPTChain struct {
	Name  string
	Rules []IPTRule
}

// IPSet is a remote group's member set of one family.
type IPSet struct {
	Name    string
	V6      bool
	Members []netip.Prefix
}

// Family is the set's ipset family.
func (s IPSet) Family() string {
	if s.V6 {
		return "inet6"
	}
	return "inet"
}

// IPTables is a node's whole iptables rendering.
type IPTables struct {
	Filter, Raw   []IPTChain // bothnia's iptables chains
	Filter6, Raw6 []IPTChain // and ip6tables chains, of the same names
	Eb            []IPTChain // ebtables nat chains
	EbJumps       []IPTRule  // ebtables nat rules in built-in chains: "PREROUTING -i tap... -j ..."
	EbFilter      []IPTChain // ebtables filter chains
	EbFilterJumps []IPTRule  // and their rules in built-in chains: "FORWARD -i tap+ -j ..."
	Sets          []IPSet
}

// IPTJumps are the rules that hook bothnia's chains into the built-in
// ones, by built-in chain, in both families: the same for every node.
var IPTJumps = map[string]IPTRule{
	"PREROUTING": {"-j " + iptPrefix + "PREROUTING"}, // raw: conntrack zones
	"FORWARD":    {"-j " + iptPrefix + "FORWARD"},
	"INPUT":      {"-j " + iptPrefix + "INPUT"},
}

// Hash is the rule's identity, carried in its comment: felix's way of
// comparing rules without parsing what iptables-save prints.
func (r IPTRule) Hash(chain string) string {
	h := fnv.New64a()
	h.Write([]byte(chain + " " + r.Args))
	return fmt.Sprintf("bn:%016x", h.Sum64())
}

// Line renders the rule for iptables-restore.
func (r IPTRule) Line(chain string) string {
	return fmt.Sprintf("-A %s %s -m comment --comment %s", chain, r.Args, r.Hash(chain))
}

func portSuffix(p *Port) string { return strings.TrimPrefix(p.Name, "tap")[:10] }

// IPTChainName returns a port chain's name: kind is i, o or s.
func IPTChainName(kind string, p *Port) string { return iptPrefix + kind + portSuffix(p) }

// IPSetName is the ipset of a group's members of one family.
func IPSetName(group string, v6 bool) string {
	fam := "NIPv4"
	if v6 {
		fam = "NIPv6"
	}
	// ipset names are at most 31 characters.
	n := fam + group
	if len(n) > 31 {
		h := fnv.New32a()
		h.Write([]byte(group))
		n = fmt.Sprintf("%s%.18s%08x", fam, group, h.Sum32())
	}
	return n
}

// RenderIPTables renders one node's firewall in Neutron's iptables layout.
func RenderIPTables(f *Fabric, node string) *IPTables {
	return RenderIPTablesZones(f, node, f.Zones(node, nil))
}

// RenderIPTablesZones renders with the node's conntrack zones (bridge ->
// zone, from Zones).
func RenderIPTablesZones(f *Fabric, node string, zoneOf map[string]uint16) *IPTables {
	ports := f.Node(node)
	fwd := IPTChain{Name: iptPrefix + "FORWARD"}
	input := IPTChain{Name: iptPrefix + "INPUT"}
	sg := IPTChain{Name: iptPrefix + "sg-chain"}
	fallback := IPTChain{Name: iptPrefix + "sg-fallback", Rules: []IPTRule{{"-j DROP"}}}
	pre := IPTChain{Name: iptPrefix + "PREROUTING"}
	knownIn, knownOut := knownTaps(f, node)
	// The node routes nothing from or into its networks' bridges (a
	// routed packet meets neither port's groups), and a tap on them that
	// is neither a secured port nor an open one sends and receives
	// nothing (fail closed: plugged before its rules are in).
	for _, br := range f.Bridges() {
		fwd.Rules = append(fwd.Rules,
			IPTRule{fmt.Sprintf("-i %s -m physdev ! --physdev-is-bridged -j DROP", br)},
			IPTRule{fmt.Sprintf("-o %s -m physdev ! --physdev-is-bridged -j DROP", br)},
			IPTRule{fmt.Sprintf("-i %s -m physdev --physdev-is-bridged -j %s", br, knownIn.Name)},
			IPTRule{fmt.Sprintf("-o %s -m physdev --physdev-is-bridged -j %s", br, knownOut.Name)})
		input.Rules = append(input.Rules, IPTRule{fmt.Sprintf("-i %s -j %s", br, knownIn.Name)})
	}
	r := &IPTables{}
	var portChains, portChains6 []IPTChain
	groups := map[string]bool{}
	bridges := map[string]bool{}
	for i := range ports {
		p := &ports[i]
		tap := p.Name
		fwd.Rules = append(fwd.Rules,
			IPTRule{fmt.Sprintf("-m physdev --physdev-out %s --physdev-is-bridged -j %s", tap, sg.Name)},
			IPTRule{fmt.Sprintf("-m physdev --physdev-in %s --physdev-is-bridged -j %s", tap, sg.Name)})
		// Neutron sends what a port delivers to the node itself through
		// its egress chain too (without --physdev-is-bridged, which no
		// locally delivered packet matches).
		input.Rules = append(input.Rules, IPTRule{fmt.Sprintf("-m physdev --physdev-in %s -j %s", tap, IPTChainName("o", p))})
		sg.Rules = append(sg.Rules,
			IPTRule{fmt.Sprintf("-m physdev --physdev-out %s --physdev-is-bridged -j %s", tap, IPTChainName("i", p))},
			IPTRule{fmt.Sprintf("-m physdev --physdev-in %s --physdev-is-bridged -j %s", tap, IPTChainName("o", p))})
		portChains = append(portChains, iptIngress(f, p), iptEgress(f, p), iptSource(p, false))
		portChains6 = append(portChains6, iptIngress6(f, p), iptEgress6(f, p), iptSource(p, true), iptND(p))
		r.Eb = append(r.Eb, ebPort(p))
		r.EbJumps = append(r.EbJumps, IPTRule{fmt.Sprintf("PREROUTING -i %s -j %s", tap, ebChain(p))},
			IPTRule{fmt.Sprintf("POSTROUTING -o %s -j %s", tap, ebTagged)})
		for _, g := range p.Groups {
			groups[g] = true
		}
		bridges[f.Networks[p.Network].Bridge] = true
	}
	sg.Rules = append(sg.Rules, IPTRule{"-j ACCEPT"})
	if len(ports) > 0 {
		r.Eb = append(r.Eb, ebTaggedChain())
	}
	for _, br := range slices.Sorted(maps.Keys(bridges)) {
		pre.Rules = append(pre.Rules, IPTRule{fmt.Sprintf("-i %s -j CT --zone %d", br, zoneOf[br])})
	}
	r.EbFilter = ebUnknown(f, node)
	r.EbFilterJumps = []IPTRule{{"FORWARD -i tap+ -j " + ebUnknownIn}, {"FORWARD -o tap+ -j " + ebUnknownOut}}
	r.Filter = append([]IPTChain{fwd, input, sg, fallback, knownIn, knownOut}, portChains...)
	r.Filter6 = append([]IPTChain{fwd, input, sg, fallback, knownIn, knownOut}, portChains6...)
	r.Raw, r.Raw6 = []IPTChain{pre}, []IPTChain{pre}
	type setKey struct {
		group string
		v6    bool
	}
	sets := map[setKey]bool{}
	for g := range groups {
		for _, rule := range f.Groups[g].Rules {
			if rule.RemoteGroup != "" {
				sets[setKey{rule.RemoteGroup, rule.V6}] = true
			}
		}
	}
	keys := slices.SortedFunc(maps.Keys(sets), func(a, b setKey) int {
		return strings.Compare(IPSetName(a.group, a.v6), IPSetName(b.group, b.v6))
	})
	for _, k := range keys {
		s := IPSet{Name: IPSetName(k.group, k.v6), V6: k.v6}
		for _, m := range f.Sets[k.group] {
			if m.Addr().Is6() == k.v6 {
				s.Members = append(s.Members, hashNet(m)...)
			}
		}
		r.Sets = append(r.Sets, s)
	}
	return r
}

// hashNet is a member as ipset's hash:net takes it: a /0 (an allowed
// address pair of 0.0.0.0/0) is refused there, and would fail the whole
// restore, so it goes in as its two halves, as Neutron's ipset manager
// does.
func hashNet(p netip.Prefix) []netip.Prefix {
	if p.Bits() != 0 {
		return []netip.Prefix{p}
	}
	lo, hi := netip.MustParsePrefix("0.0.0.0/1"), netip.MustParsePrefix("128.0.0.0/1")
	if p.Addr().Is6() {
		lo, hi = netip.MustParsePrefix("::/1"), netip.MustParsePrefix("8000::/1")
	}
	return []netip.Prefix{lo, hi}
}

// knownTaps are the chains that pass the taps the firewall knows on the
// node (its secured ports and open ones) and drop any other tap: in the
// iptables layout every rule names its tap, so a tap with no rules would
// otherwise pass unfiltered.
func knownTaps(f *Fabric, node string) (in, out IPTChain) {
	in, out = IPTChain{Name: iptPrefix + "known-in"}, IPTChain{Name: iptPrefix + "known-out"}
	var taps []string
	for _, p := range f.Node(node) {
		taps = append(taps, p.Name)
	}
	taps = append(taps, f.OpenOn(node)...)
	slices.Sort(taps)
	for _, t := range taps {
		in.Rules = append(in.Rules, IPTRule{"-m physdev --physdev-in " + t + " -j RETURN"})
		out.Rules = append(out.Rules, IPTRule{"-m physdev --physdev-out " + t + " -j RETURN"})
	}
	in.Rules = append(in.Rules, IPTRule{"-m physdev --physdev-in tap+ -j DROP"})
	out.Rules = append(out.Rules, IPTRule{"-m physdev --physdev-out tap+ -j DROP"})
	return in, out
}

// iptNewNotSYN is newTCPNotSYN in the iptables layout (see there).
var iptNewNotSYN = IPTRule{"-p tcp -m state --state NEW -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -j DROP"}

func iptIngress(f *Fabric, p *Port) IPTChain {
	c := IPTChain{Name: IPTChainName("i", p), Rules: []IPTRule{{"-m state --state RELATED,ESTABLISHED -j RETURN"}}}
	for _, d := range f.Networks[p.Network].DHCP {
		c.Rules = append(c.Rules, IPTRule{fmt.Sprintf("-s %s/32 -p udp -m udp --sport 67 --dport 68 -j RETURN", d)})
	}
	c.Rules = append(c.Rules, IPTRule{"-m state --state INVALID -j DROP"}, iptNewNotSYN)
	c.Rules = append(c.Rules, iptGroupRules(f, p, true, false)...)
	return appendFallback(c)
}

func iptEgress(f *Fabric, p *Port) IPTChain {
	c := IPTChain{Name: IPTChainName("o", p), Rules: []IPTRule{
		{"-s 0.0.0.0/32 -d 255.255.255.255/32 -p udp -m udp --sport 68 --dport 67 -j RETURN"},
		{"-j " + IPTChainName("s", p)},
		{"-p udp -m udp --sport 68 --dport 67 -j RETURN"},
		// Clients take a datagram to port 68 for an answer, whatever
		// its source port.
		{"-p udp -m udp --dport 68 -j DROP"},
		{"-m state --state RELATED,ESTABLISHED -j RETURN"},
		{"-m state --state INVALID -j DROP"},
		iptNewNotSYN,
	}}
	c.Rules = append(c.Rules, iptGroupRules(f, p, false, false)...)
	return appendFallback(c)
}

// iptIngress6 admits the ICMPv6 a port needs (MLD query, NS, NA) and
// what its groups allow; router advertisements only through a group rule.
func iptIngress6(f *Fabric, p *Port) IPTChain {
	c := IPTChain{Name: IPTChainName("i", p), Rules: []IPTRule{
		{"-m state --state RELATED,ESTABLISHED -j RETURN"},
		{"-m state --state INVALID -j DROP"},
		iptNewNotSYN,
	}}
	for _, t := range ndIngress {
		c.Rules = append(c.Rules, IPTRule{fmt.Sprintf("-p ipv6-icmp -m icmp6 --icmpv6-type %d -j RETURN", t)})
	}
	c.Rules = append(c.Rules, iptGroupRules(f, p, true, true)...)
	return appendFallback(c)
}

// iptEgress6 is Neutron's IPv6 egress: DAD and MLD from ::, the source
// chain, no DHCPv6 server and no router advertisement from a VM.
func iptEgress6(f *Fabric, p *Port) IPTChain {
	c := IPTChain{Name: IPTChainName("o", p)}
	for _, t := range []int{icmpv6NS, icmpv6NA} {
		c.Rules = append(c.Rules, IPTRule{fmt.Sprintf("-p ipv6-icmp -m icmp6 --icmpv6-type %d -j %s", t, IPTChainName("n", p))})
	}
	for _, t := range ndUnspec {
		c.Rules = append(c.Rules, IPTRule{fmt.Sprintf("-s ::/128 -d ff02::/16 -p ipv6-icmp -m icmp6 --icmpv6-type %d -j RETURN", t)})
	}
	c.Rules = append(c.Rules,
		IPTRule{"-j " + IPTChainName("s", p)},
		IPTRule{"-p udp -m udp --dport 546 -j DROP"},
		IPTRule{"-p udp -m udp --sport 546 --dport 547 -j RETURN"},
		IPTRule{"-m state --state RELATED,ESTABLISHED -j RETURN"},
		IPTRule{"-m state --state INVALID -j DROP"},
		iptNewNotSYN,
		IPTRule{fmt.Sprintf("-p ipv6-icmp -m icmp6 --icmpv6-type %d -j DROP", icmpv6RA)})
	for _, t := range ndEgress {
		c.Rules = append(c.Rules, IPTRule{fmt.Sprintf("-p ipv6-icmp -m icmp6 --icmpv6-type %d -j RETURN", t)})
	}
	c.Rules = append(c.Rules, iptGroupRules(f, p, false, true)...)
	return appendFallback(c)
}

func appendFallback(c IPTChain) IPTChain {
	c.Rules = append(c.Rules, IPTRule{"-j " + iptPrefix + "sg-fallback"})
	return c
}

// iptSource is Neutron's source chain: the port's pairs of one family with
// their MACs, and for IPv6 the link-local address of each MAC.
func iptSource(p *Port, v6 bool) IPTChain {
	c := IPTChain{Name: IPTChainName("s", p)}
	for _, pr := range p.Pairs {
		if pr.Prefix.Addr().Is6() == v6 {
			c.Rules = append(c.Rules, IPTRule{fmt.Sprintf("-s %s -m mac --mac-source %s -j RETURN", pr.Prefix, strings.ToUpper(pr.MAC))})
		}
	}
	if v6 {
		for _, m := range p.MACs() {
			c.Rules = append(c.Rules, IPTRule{fmt.Sprintf("-s %s/128 -m mac --mac-source %s -j RETURN", plan.LinkLocal(m), strings.ToUpper(m))})
		}
	}
	c.Rules = append(c.Rules, IPTRule{"-j DROP"})
	return c
}

// iptProtoNames are the names iptables takes for -p; others go by number.
var iptProtoNames = map[int]string{1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 132: "sctp", 33: "dccp", 136: "udplite"}

func iptGroupRules(f *Fabric, p *Port, ingress, v6 bool) []IPTRule {
	var out []IPTRule
	for _, g := range p.Groups {
		for _, r := range f.Groups[g].Rules {
			if r.Ingress != ingress || r.V6 != v6 {
				continue
			}
			var a []string
			dir, setDir := "-d", "dst"
			if ingress {
				dir, setDir = "-s", "src"
			}
			if r.RemotePrefix.IsValid() {
				a = append(a, dir+" "+r.RemotePrefix.String())
			}
			if r.Proto >= 0 {
				name := iptProtoNames[r.Proto]
				if name == "" {
					name = fmt.Sprint(r.Proto)
				}
				a = append(a, "-p "+name)
				icmp := map[int]string{1: "-m icmp --icmp-type", 58: "-m icmp6 --icmpv6-type"}[r.Proto]
				switch {
				case r.PortMin > 0 && r.PortMin == r.PortMax && r.Proto != 136:
					a = append(a, fmt.Sprintf("-m %s --dport %d", name, r.PortMin))
				case r.PortMin > 0:
					a = append(a, fmt.Sprintf("-m multiport --dports %d:%d", r.PortMin, r.PortMax))
				case icmp != "" && r.ICMPType >= 0 && r.ICMPCode >= 0:
					a = append(a, fmt.Sprintf("%s %d/%d", icmp, r.ICMPType, r.ICMPCode))
				case icmp != "" && r.ICMPType >= 0:
					a = append(a, fmt.Sprintf("%s %d", icmp, r.ICMPType))
				}
			}
			if r.RemoteGroup != "" {
				a = append(a, fmt.Sprintf("-m set --match-set %s %s", IPSetName(r.RemoteGroup, v6), setDir))
			}
			a = append(a, "-j RETURN")
			out = append(out, IPTRule{strings.Join(a, " ")})
		}
	}
	return out
}

// String renders the whole thing as the restore input of a full load.
func (r *IPTables) String() string {
	var b strings.Builder
	for _, s := range r.Sets {
		fmt.Fprintf(&b, "# ipset create %s hash:net family %s\n", s.Name, s.Family())
		for _, m := range s.Members {
			fmt.Fprintf(&b, "# ipset add %s %s\n", s.Name, m)
		}
	}
	writeTable(&b, "raw", []string{"PREROUTING"}, r.Raw)
	writeTable(&b, "filter", []string{"FORWARD", "INPUT"}, r.Filter)
	b.WriteString("# ip6tables\n")
	writeTable(&b, "raw", []string{"PREROUTING"}, r.Raw6)
	writeTable(&b, "filter", []string{"FORWARD", "INPUT"}, r.Filter6)
	b.WriteString("# ebtables\n")
	writeEb(&b, "nat", r.Eb, r.EbJumps)
	writeEb(&b, "filter", r.EbFilter, r.EbFilterJumps)
	return b.String()
}

func writeTable(b *strings.Builder, table string, builtins []string, chains []IPTChain) {
	fmt.Fprintf(b, "*%s\n", table)
	for _, c := range chains {
		fmt.Fprintf(b, ":%s - [0:0]\n", c.Name)
	}
	for _, bi := range builtins {
		fmt.Fprintln(b, IPTJumps[bi].Line(bi))
	}
	for _, c := range chains {
		for _, rule := range c.Rules {
			fmt.Fprintln(b, rule.Line(c.Name))
		}
	}
	b.WriteString("COMMIT\n")
}
