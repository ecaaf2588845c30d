package spec

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Protocols by name, as Neutron accepts them (neutron-lib's
// IP_PROTOCOL_MAP; "icmpv6" is its legacy alias of ipv6-icmp).
var protocols = map[string]int{
	"ah": 51, "dccp": 33, "egp": 8, "esp": 50, "gre": 47, "hopopt": 0, "icmp": 1,
	"igmp": 2, "ipip": 4, "ipv6-encap": 41, "ipv6-frag": 44, "ipv6-icmp": 58,
	"icmpv6": 58, "ipv6-nonxt": 59, "ipv6-opts": 60, "ipv6-route": 43, "ospf": 89,
	"pgm": 113, "rsvp": 46, "sctp": 132, "tcp": 6, "udp": 17, "udplite": 136, "vrrp": 112,
}

// ProtocolNumber returns the IP protocol number of a rule's protocol, or -1
// for any. As in Neutron, "", "any" and 0 all mean any protocol (0 is
// HOPOPT's number, but Neutron renders it as no protocol match at all), and
// "icmp" in an IPv6 rule means ICMPv6.
func (r *SGRule) ProtocolNumber() int {
	p := strings.ToLower(r.Protocol)
	if p == "" || p == "any" {
		return -1
	}
	n, ok := protocols[p]
	if !ok {
		var err error
		if n, err = strconv.Atoi(p); err != nil {
			return -1
		}
	}
	switch {
	case n == 0:
		return -1
	case n == 1 && r.Ethertype == "IPv6":
		return 58
	}
	return n
}

// Ports returns a tcp/udp/sctp rule's port range, or 0, 0 for all ports.
func (r *SGRule) Ports() (int, int) {
	if r.PortRange == "" {
		return 0, 0
	}
	a, b, found := strings.Cut(r.PortRange, "-")
	lo, _ := strconv.Atoi(a)
	hi := lo
	if found {
		hi, _ = strconv.Atoi(b)
	}
	return lo, hi
}

// HasPorts reports whether a protocol number carries ports (Neutron's
// SG_PORT_PROTO_NAMES: tcp, udp, sctp, dccp, udplite; all keep the
// destination port at offset 2 of their header).
func HasPorts(proto int) bool {
	return proto == 6 || proto == 17 || proto == 132 || proto == 33 || proto == 136
}

func (v *validator) securityGroups(s *Spec) {
	if s.Firewall != "nftables" && s.Firewall != "iptables" {
		v.addf("firewall", "%q is not a renderer; use nftables (default) or iptables", s.Firewall)
	}
	for i, g := range s.SecurityGroups {
		f := fmt.Sprintf("security_groups[%d]", i)
		v.uniqueName("security group", f+".name", g.Name)
		for j, r := range g.Rules {
			v.rule(s, fmt.Sprintf("%s.rules[%d]", f, j), r)
		}
	}
}

func (v *validator) rule(s *Spec, f string, r *SGRule) {
	if r.Direction != "ingress" && r.Direction != "egress" {
		v.addf(f+".direction", "%q is not a direction; use ingress or egress", r.Direction)
	}
	if r.Ethertype != "IPv4" && r.Ethertype != "IPv6" {
		v.addf(f+".ethertype", "%q is not an ethertype; use IPv4 or IPv6", r.Ethertype)
	}
	proto := r.ProtocolNumber()
	if _, named := protocols[strings.ToLower(r.Protocol)]; r.Protocol != "" && strings.ToLower(r.Protocol) != "any" && !named {
		if n, err := strconv.Atoi(r.Protocol); err != nil || n < 0 || n > 255 {
			v.addf(f+".protocol", "%q is not a protocol; use a name Neutron knows (tcp, udp, icmp, ipv6-icmp, sctp, gre, esp, ah, vrrp, ...) or a number 0-255", r.Protocol)
		}
	}
	if proto == 58 && r.Ethertype == "IPv4" {
		v.addf(f+".protocol", "%s does not go with ethertype IPv4; use icmp", r.Protocol)
	}
	if r.PortRange != "" {
		lo, hi := r.Ports()
		switch {
		case !HasPorts(proto):
			v.addf(f+".port_range", "protocol %q has no ports; port_range needs tcp, udp, sctp, dccp or udplite", r.Protocol)
		case lo < 1 || hi > 65535 || hi < lo || strings.Trim(r.PortRange, "0123456789-") != "":
			v.addf(f+".port_range", "%q is not a range N or N-M within 1-65535", r.PortRange)
		}
	}
	if r.ICMPType != nil || r.ICMPCode != nil {
		if proto != 1 && proto != 58 {
			v.addf(f+".icmp_type", "icmp_type and icmp_code need protocol icmp or icmpv6")
		}
		if r.ICMPCode != nil && r.ICMPType == nil {
			v.addf(f+".icmp_code", "an ICMP code needs an icmp_type")
		}
		for _, x := range []*int{r.ICMPType, r.ICMPCode} {
			if x != nil && (*x < 0 || *x > 255) {
				v.addf(f+".icmp_type", "%d is outside 0-255", *x)
			}
		}
	}
	if r.RemoteIPPrefix != "" && r.RemoteGroup != "" {
		v.addf(f, "remote_ip_prefix and remote_group exclude each other; split the rule in two")
	}
	if r.RemoteIPPrefix != "" {
		p, err := netip.ParsePrefix(r.RemoteIPPrefix)
		switch {
		case err != nil:
			v.addf(f+".remote_ip_prefix", "%q is not a CIDR", r.RemoteIPPrefix)
		case p.Addr().Is4() != (r.Ethertype == "IPv4"):
			v.addf(f+".remote_ip_prefix", "%s is not an %s prefix", p, r.Ethertype)
		case p.Masked() != p:
			v.addf(f+".remote_ip_prefix", "%s has host bits set; write %s", p, p.Masked())
		}
	}
	if r.RemoteGroup != "" && s.SecurityGroup(r.RemoteGroup) == nil {
		v.addf(f+".remote_group", "unknown security group %q", r.RemoteGroup)
	}
}

func (v *validator) port(s *Spec, f string, vm *VM) {
	if !vm.Secured() && len(vm.SecurityGroups) > 0 {
		v.addf(f+".security_groups", "a port without port security takes no security groups (Neutron refuses them too); drop one of the two")
	}
	for i, g := range vm.SecurityGroups {
		if s.SecurityGroup(g) == nil {
			v.addf(fmt.Sprintf("%s.security_groups[%d]", f, i), "unknown security group %q", g)
		}
	}
	for i, p := range vm.AllowedAddressPairs {
		pf := fmt.Sprintf("%s.allowed_address_pairs[%d]", f, i)
		if _, err := ParsePairIP(p.IP); err != nil {
			v.addf(pf+".ip", "%q is not an address or CIDR", p.IP)
		}
		if p.MAC != "" {
			if hw, err := net.ParseMAC(p.MAC); err != nil || len(hw) != 6 || hw[0]&1 == 1 || isZeroMAC(hw) {
				v.addf(pf+".mac", "%q is not a unicast MAC address", p.MAC)
			}
		}
	}
}

// ParsePairIP reads an allowed address pair's ip: an address (a host
// prefix) or a CIDR.
func ParsePairIP(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	return p.Masked(), err
}
