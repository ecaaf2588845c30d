package firewall

import (
	"fmt"
	"hash/fnv"
	"maps"
	"net/netip"
	"slices"
	"strings"
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
//	ipset hash:net per remote group; ebtables nat PREROUTING: ARP and MAC per port
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

// IPSet is a remote group's member set.
type IPSet struct {
	Name    string
	Members []netip.Prefix
}

// IPTables is a node's whole iptables rendering.
type IPTables struct {
	Filter, Raw []IPTChain // bothnia's chains
	// FilterJump and RawJump hook bothnia's chains into the built-in ones.
	FilterJump, RawJump IPTRule
	Eb                  []IPTChain // ebtables nat chains
	EbJumps             []IPTRule  // ebtables nat PREROUTING rules
	Sets                []IPSet
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

// IPSetName is the ipset of a group's IPv4 members.
func IPSetName(group string) string {
	// ipset names are at most 31 characters.
	n := "NIPv4" + group
	if len(n) > 31 {
		h := fnv.New32a()
		h.Write([]byte(group))
		n = fmt.Sprintf("NIPv4%.18s%08x", group, h.Sum32())
	}
	return n
}

// RenderIPTables renders one node's firewall in Neutron's iptables layout.
// IPv6 rules are not rendered: in this mode ports may send IPv6 only from
// their MACs (ebtables), without address or group checks.
func RenderIPTables(f *Fabric, node string) *IPTables {
	ports := f.Node(node)
	fwd := IPTChain{Name: iptPrefix + "FORWARD"}
	sg := IPTChain{Name: iptPrefix + "sg-chain"}
	fallback := IPTChain{Name: iptPrefix + "sg-fallback", Rules: []IPTRule{{"-j DROP"}}}
	pre := IPTChain{Name: iptPrefix + "PREROUTING"}
	r := &IPTables{
		FilterJump: IPTRule{"-j " + fwd.Name},
		RawJump:    IPTRule{"-j " + pre.Name},
	}
	var portChains []IPTChain
	groups := map[string]bool{}
	zones := map[string]uint16{}
	for i := range ports {
		p := &ports[i]
		tap := p.Name
		fwd.Rules = append(fwd.Rules,
			IPTRule{fmt.Sprintf("-m physdev --physdev-out %s --physdev-is-bridged -j %s", tap, sg.Name)},
			IPTRule{fmt.Sprintf("-m physdev --physdev-in %s --physdev-is-bridged -j %s", tap, sg.Name)})
		sg.Rules = append(sg.Rules,
			IPTRule{fmt.Sprintf("-m physdev --physdev-out %s --physdev-is-bridged -j %s", tap, IPTChainName("i", p))},
			IPTRule{fmt.Sprintf("-m physdev --physdev-in %s --physdev-is-bridged -j %s", tap, IPTChainName("o", p))})
		portChains = append(portChains, iptIngress(f, p), iptEgress(f, p), iptSource(p))
		r.Eb = append(r.Eb, ebPort(p))
		r.EbJumps = append(r.EbJumps, IPTRule{fmt.Sprintf("-i %s -j %s", tap, ebChain(p))})
		for _, g := range p.Groups {
			groups[g] = true
		}
		nw := f.Networks[p.Network]
		zones[nw.Bridge] = nw.Zone
	}
	sg.Rules = append(sg.Rules, IPTRule{"-j ACCEPT"})
	for _, br := range slices.Sorted(maps.Keys(zones)) {
		pre.Rules = append(pre.Rules, IPTRule{fmt.Sprintf("-i %s -j CT --zone %d", br, zones[br])})
	}
	r.Filter = append([]IPTChain{fwd, sg, fallback}, portChains...)
	r.Raw = []IPTChain{pre}
	sets := map[string]bool{}
	for g := range groups {
		for _, rule := range f.Groups[g].Rules {
			if rule.RemoteGroup != "" && !rule.V6 {
				sets[rule.RemoteGroup] = true
			}
		}
	}
	for _, g := range slices.Sorted(maps.Keys(sets)) {
		s := IPSet{Name: IPSetName(g)}
		for _, m := range f.Sets[g] {
			if m.Addr().Is4() {
				s.Members = append(s.Members, m)
			}
		}
		r.Sets = append(r.Sets, s)
	}
	return r
}

func iptIngress(f *Fabric, p *Port) IPTChain {
	c := IPTChain{Name: IPTChainName("i", p), Rules: []IPTRule{{"-m state --state RELATED,ESTABLISHED -j RETURN"}}}
	for _, d := range f.Networks[p.Network].DHCP {
		c.Rules = append(c.Rules, IPTRule{fmt.Sprintf("-s %s/32 -p udp -m udp --sport 67 --dport 68 -j RETURN", d)})
	}
	c.Rules = append(c.Rules, IPTRule{"-m state --state INVALID -j DROP"})
	c.Rules = append(c.Rules, iptGroupRules(f, p, true)...)
	return appendFallback(c)
}

func iptEgress(f *Fabric, p *Port) IPTChain {
	c := IPTChain{Name: IPTChainName("o", p), Rules: []IPTRule{
		{"-s 0.0.0.0/32 -d 255.255.255.255/32 -p udp -m udp --sport 68 --dport 67 -j RETURN"},
		{"-j " + IPTChainName("s", p)},
		{"-p udp -m udp --sport 68 --dport 67 -j RETURN"},
		{"-p udp -m udp --sport 67 --dport 68 -j DROP"},
		{"-m state --state RELATED,ESTABLISHED -j RETURN"},
		{"-m state --state INVALID -j DROP"},
	}}
	c.Rules = append(c.Rules, iptGroupRules(f, p, false)...)
	return appendFallback(c)
}

func appendFallback(c IPTChain) IPTChain {
	c.Rules = append(c.Rules, IPTRule{"-j " + iptPrefix + "sg-fallback"})
	return c
}

// iptSource is Neutron's source chain: the port's IPv4 pairs, with MACs.
func iptSource(p *Port) IPTChain {
	c := IPTChain{Name: IPTChainName("s", p)}
	for _, pr := range p.Pairs {
		if pr.Prefix.Addr().Is4() {
			c.Rules = append(c.Rules, IPTRule{fmt.Sprintf("-s %s -m mac --mac-source %s -j RETURN", pr.Prefix, strings.ToUpper(pr.MAC))})
		}
	}
	c.Rules = append(c.Rules, IPTRule{"-j DROP"})
	return c
}

func iptGroupRules(f *Fabric, p *Port, ingress bool) []IPTRule {
	var out []IPTRule
	for _, g := range p.Groups {
		for _, r := range f.Groups[g].Rules {
			if r.Ingress != ingress || r.V6 {
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
				name := map[int]string{1: "icmp", 6: "tcp", 17: "udp", 132: "sctp"}[r.Proto]
				if name == "" {
					name = fmt.Sprint(r.Proto)
				}
				a = append(a, "-p "+name)
				switch {
				case r.PortMin > 0 && r.PortMin == r.PortMax:
					a = append(a, fmt.Sprintf("-m %s --dport %d", name, r.PortMin))
				case r.PortMin > 0:
					a = append(a, fmt.Sprintf("-m multiport --dports %d:%d", r.PortMin, r.PortMax))
				case r.Proto == 1 && r.ICMPType >= 0 && r.ICMPCode >= 0:
					a = append(a, fmt.Sprintf("-m icmp --icmp-type %d/%d", r.ICMPType, r.ICMPCode))
				case r.Proto == 1 && r.ICMPType >= 0:
					a = append(a, fmt.Sprintf("-m icmp --icmp-type %d", r.ICMPType))
				}
			}
			if r.RemoteGroup != "" {
				a = append(a, fmt.Sprintf("-m set --match-set %s %s", IPSetName(r.RemoteGroup), setDir))
			}
			a = append(a, "-j RETURN")
			out = append(out, IPTRule{strings.Join(a, " ")})
		}
	}
	return out
}

func ebChain(p *Port) string { return "bothnia-" + portSuffix(p) }

// ebPort is Neutron's ARP and MAC spoofing protection for one port: ARP
// only for its pairs, other frames only from its MACs.
func ebPort(p *Port) IPTChain {
	c := IPTChain{Name: ebChain(p)}
	macs := map[string]bool{}
	for _, pr := range p.Pairs {
		macs[pr.MAC] = true
		if pr.Prefix.Addr().Is4() {
			// Written as ebtables-save prints it (a host without /32), so
			// that a read-back compares equal.
			src := pr.Prefix.String()
			if pr.Prefix.IsSingleIP() {
				src = pr.Prefix.Addr().String()
			}
			c.Rules = append(c.Rules, IPTRule{fmt.Sprintf("-p ARP -s %s --arp-ip-src %s --arp-mac-src %s -j RETURN", pr.MAC, src, pr.MAC)})
		}
	}
	c.Rules = append(c.Rules, IPTRule{"-p ARP -j DROP"})
	for _, m := range slices.Sorted(maps.Keys(macs)) {
		c.Rules = append(c.Rules, IPTRule{"-s " + m + " -j RETURN"})
	}
	c.Rules = append(c.Rules, IPTRule{"-j DROP"})
	return c
}

// String renders the whole thing as the restore input of a full load.
func (r *IPTables) String() string {
	var b strings.Builder
	for _, s := range r.Sets {
		fmt.Fprintf(&b, "# ipset create %s hash:net\n", s.Name)
		for _, m := range s.Members {
			fmt.Fprintf(&b, "# ipset add %s %s\n", s.Name, m)
		}
	}
	writeTable(&b, "raw", "PREROUTING", r.RawJump, r.Raw)
	writeTable(&b, "filter", "FORWARD", r.FilterJump, r.Filter)
	b.WriteString("# ebtables\n*nat\n")
	for _, c := range r.Eb {
		fmt.Fprintf(&b, ":%s RETURN\n", c.Name)
	}
	for _, j := range r.EbJumps {
		fmt.Fprintf(&b, "-A PREROUTING %s\n", j.Args)
	}
	for _, c := range r.Eb {
		for _, rule := range c.Rules {
			fmt.Fprintf(&b, "-A %s %s\n", c.Name, rule.Args)
		}
	}
	return b.String()
}

func writeTable(b *strings.Builder, table, builtin string, jump IPTRule, chains []IPTChain) {
	fmt.Fprintf(b, "*%s\n", table)
	for _, c := range chains {
		fmt.Fprintf(b, ":%s - [0:0]\n", c.Name)
	}
	fmt.Fprintln(b, jump.Line(builtin))
	for _, c := range chains {
		for _, rule := range c.Rules {
			fmt.Fprintln(b, rule.Line(c.Name))
		}
	}
	b.WriteString("COMMIT\n")
}
