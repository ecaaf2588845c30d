package spec

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Protocols by name, as Neutron accepts them.
var protocols = map[string]int{"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "sctp": 132}

// ProtocolNumber returns the IP protocol number of a rule's protocol, or -1
// for any.
func (r *SGRule) ProtocolNumber() int {
	if r.Protocol == "" || r.Protocol == "any" {
		return -1
	}
	if n, ok := protocols[strings.ToLower(r.Protocol)]; ok {
		return n
	}
	n, _ := strconv.Atoi(r.Protocol)
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

// HasPorts reports whether a protocol number carries ports.
func HasPorts(proto int) bool { return proto == 6 || proto == 17 || proto == 132 }

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
	if _, named := protocols[strings.ToLower(r.Protocol)]; r.Protocol != "" && r.Protocol != "any" && !named {
		if n, err := strconv.Atoi(r.Protocol); err != nil || n < 0 || n > 255 {
			v.addf(f+".protocol", "%q is not a protocol; use tcp, udp, icmp, icmpv6, sctp or a number 0-255", r.Protocol)
		}
	}
	if (proto == 1 && r.Ethertype == "IPv6") || (proto == 58 && r.Ethertype == "IPv4") {
		v.addf(f+".protocol", "%s does not go with ethertype %s", r.Protocol, r.Ethertype)
	}
	if r.PortRange != "" {
		lo, hi := r.Ports()
		switch {
		case !HasPorts(proto):
			v.addf(f+".port_range", "protocol %q has no ports; port_range needs tcp, udp or sctp", r.Protocol)
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
			if hw, err := net.ParseMAC(p.MAC); err != nil || len(hw) != 6 || hw[0]&1 == 1 {
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
