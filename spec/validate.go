package spec

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// Error is one problem in a spec: the field path, what is wrong and, where
// there is one obvious remedy, what to do.
type Error struct {
	Field string // e.g. sites.knox.pools[0]
	Msg   string
}

func (e *Error) Error() string { return "spec: " + e.Field + ": " + e.Msg }

// validator collects every problem instead of stopping at the first, so an
// operator fixes a spec in one round trip.
type validator struct {
	errs []error
	// owners maps each address claimed so far (per network, "" for infra
	// that every network shares) to the field that claimed it.
	owners map[string]string
	macs   map[string]string
	names  map[string]string

	// What the later checks measure against, set by Validate and sites.
	fabric   netip.Prefix
	fabricOK bool
	halves   map[string]netip.Prefix // each site's half of the fabric
	pools    []pool
}

// pool is a site's address pool and the field that gave it.
type pool struct {
	field string
	r     Range
}

func (v *validator) addf(field, format string, args ...any) {
	v.errs = append(v.errs, &Error{Field: field, Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) prefix(field, s string) (netip.Prefix, bool) {
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is4() {
		v.addf(field, "%q is not an IPv4 CIDR such as 10.101.0.0/16", s)
		return netip.Prefix{}, false
	}
	if p.Masked() != p {
		v.addf(field, "%s has host bits set; write %s", s, p.Masked())
		return netip.Prefix{}, false
	}
	return p, true
}

func (v *validator) addr(field, s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		v.addf(field, "%q is not an IPv4 address", s)
		return netip.Addr{}, false
	}
	return a, true
}

// claim records that field uses address a in scope (a network name, or ""
// for infrastructure addresses that every network sees) and reports a
// collision with an earlier claim.
func (v *validator) claim(scope, field string, a netip.Addr) {
	keys := []string{scope + "/" + a.String()}
	if scope != "" {
		keys = append(keys, "/"+a.String())
	}
	for _, k := range keys {
		if prev, ok := v.owners[k]; ok {
			v.addf(field, "%s is already used by %s; give one of them another address", a, prev)
			return
		}
	}
	v.owners[keys[0]] = field
}

func (v *validator) uniqueName(kind, field, name string) {
	if name == "" {
		v.addf(field, "a %s needs a name", kind)
		return
	}
	if why := NameRule(kind, name); why != "" {
		v.addf(field, "%s name %q %s", kind, clip(name), why)
		return
	}
	k := kind + "/" + name
	if prev, ok := v.names[k]; ok {
		v.addf(field, "%s name %q is also used by %s; names must be unique", kind, name, prev)
		return
	}
	v.names[k] = field
}

// NameRule says which rule a name breaks, or "". A VM's and a node's
// names are DNS labels (a VM's is its name in the fabric's zone; both
// name namespaces, devices' owners and log fields); a network's and a
// group's are one store key each and appear in nftables, ipset and
// iptables names, so they keep to letters, digits and -_. as well.
func NameRule(kind, name string) string {
	max := 63
	label := kind == "vm" || kind == "node"
	if len(name) > max {
		return fmt.Sprintf("is %d characters long; a name has at most %d", len(name), max)
	}
	for i, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' ||
			!label && (r == '_' || r == '.')
		if !ok {
			if label {
				return fmt.Sprintf("has %q at %d; a DNS label has only letters, digits and -", r, i)
			}
			return fmt.Sprintf("has %q at %d; use only letters, digits and - _ .", r, i)
		}
	}
	if label && (name[0] == '-' || name[len(name)-1] == '-') {
		return "begins or ends with -, which a DNS label may not"
	}
	return ""
}

// clip shortens a long name for an error message.
func clip(s string) string {
	if len(s) > 40 {
		return s[:37] + "..."
	}
	return s
}

// Validate checks the whole spec and returns every problem found, joined.
func (s *Spec) Validate() error {
	v := &validator{owners: map[string]string{}, macs: map[string]string{}, names: map[string]string{}}

	v.fabric, v.fabricOK = v.prefix("fabric.cidr", s.Fabric.CIDR)
	fabric, fabricOK := v.fabric, v.fabricOK
	if s.Fabric.Name == "" {
		v.addf("fabric.name", "the fabric needs a name")
	}

	siteNames := s.SiteNames()
	v.sites(s, siteNames)
	nodeRef := func(field, node string) { v.nodeRef(s, field, node) }

	// Link.
	switch s.Link.Mode {
	case "vlan":
		if s.Link.Device == "" {
			v.addf("link.device", "VLAN mode needs the parent device that carries the tagged link (the seed's em1)")
		}
	case "vxlan":
	default:
		v.addf("link.mode", "%q is not a mode; use vlan (real hosts) or vxlan (the lab, or hosts without a shared VLAN)", s.Link.Mode)
	}
	if s.Link.UnderlayMTU < 1280 || s.Link.UnderlayMTU > 9216 {
		v.addf("link.underlay_mtu", "%d is not a plausible MTU (1280-9216)", s.Link.UnderlayMTU)
	}

	validateDHCP(v, s, siteNames, v.halves, v.infra, nodeRef)
	if s.DNS != nil {
		validateResolvers(v, s, siteNames)
		for i, fw := range s.DNS.Forwarders {
			f := fmt.Sprintf("dns.forwarders[%d]", i)
			if ap, err := netip.ParseAddrPort(fw); err == nil {
				if !ap.Addr().Is4() {
					v.addf(f, "%q is not an IPv4 address", fw)
				}
				continue
			}
			v.addr(f, fw)
		}
	}

	if s.Router != nil {
		v.router(s, s.Router, nodeRef)
	}
	secured := v.networks(s, nodeRef)
	if secured > MaxSecuredPorts {
		v.addf("networks", "%d ports have port security, more than the %d the firewall can number; split the fabric or turn port security off where it is not needed", secured, MaxSecuredPorts)
	}
	v.pairs(s)
	v.forwarders(s, fabric, fabricOK)
	v.securityGroups(s)
	for i, r := range s.DHCPOptions.Routes {
		f := fmt.Sprintf("dhcp_options.routes[%d]", i)
		v.prefix(f+".destination", r.Destination)
		if a, ok := v.addr(f+".nexthop", r.Nexthop); ok && fabricOK && !fabric.Contains(a) {
			v.addf(f+".nexthop", "%s lies outside the fabric %s; a VM reaches its next hops on-link", a, fabric)
		}
	}
	if s.DHCPOptions.LeaseSeconds < 60 {
		v.addf("dhcp_options.lease_seconds", "%d is too short; use at least 60", s.DHCPOptions.LeaseSeconds)
	}
	for i, b := range s.Lab.Blocked {
		allowedPrefix(v, fmt.Sprintf("lab.blocked[%d].prefix", i), b.Prefix)
	}
	return errors.Join(v.errs...)
}

// pairs refuses an allowed address pair that shadows another object:
// one whose prefix covers another port's address, the router's or a DHCP
// server's, or whose MAC is another port's, unless the pair says shared.
// Neutron lets a network's owner do this; with it a VM answers ARP and
// neighbour discovery as the other, pulls its forwarding entry onto its
// own port and counts as a member of the other's remote groups, on both
// sites.
func (v *validator) pairs(s *Spec) {
	type owner struct {
		what string
		addr netip.Addr
		vm   *VM
	}
	var owners []owner
	macs := map[string]string{}
	for i, n := range s.Networks {
		for j, vm := range n.VMs {
			if a, err := netip.ParseAddr(vm.IP); err == nil {
				owners = append(owners, owner{fmt.Sprintf("vm %s (networks[%d].vms[%d])", vm.Name, i, j), a, vm})
			}
			if hw, err := net.ParseMAC(vm.MAC); err == nil {
				macs[hw.String()] = "vm " + vm.Name
			}
		}
	}
	if r := s.Router; r != nil {
		if a, err := netip.ParseAddr(r.Address); err == nil {
			owners = append(owners, owner{"the router's address", a, nil})
		}
	}
	for _, sn := range s.SiteNames() {
		if d := s.Sites[sn].DHCP; d != nil {
			for _, srv := range d.Servers() {
				if a, err := netip.ParseAddr(srv.Address); err == nil {
					owners = append(owners, owner{sn + "'s DHCP server", a, nil})
				}
			}
		}
	}
	for i, n := range s.Networks {
		for j, vm := range n.VMs {
			for k, p := range vm.AllowedAddressPairs {
				if p.Shared {
					continue
				}
				pf := fmt.Sprintf("networks[%d].vms[%d].allowed_address_pairs[%d]", i, j, k)
				pfx, err := ParsePairIP(p.IP)
				if err != nil {
					continue
				}
				for _, o := range owners {
					if o.vm != vm && pfx.Contains(o.addr) {
						v.addf(pf+".ip", "%s covers %s, %s: vm %s could answer as it; narrow the pair, or set shared: true if the two really share it", pfx, o.addr, o.what, vm.Name)
						break
					}
				}
				if hw, err := net.ParseMAC(p.MAC); err == nil {
					if other, ok := macs[hw.String()]; ok && other != "vm "+vm.Name {
						v.addf(pf+".mac", "%s is %s's MAC: vm %s could take its frames; use a MAC of its own, or set shared: true if the two really share it", hw, other, vm.Name)
					}
				}
			}
		}
	}
}

func isZeroMAC(hw net.HardwareAddr) bool {
	for _, b := range hw {
		if b != 0 {
			return false
		}
	}
	return true
}

// allowedPrefix accepts a bare address as a /32.
func allowedPrefix(v *validator, field, s string) (netip.Prefix, bool) {
	if !strings.Contains(s, "/") {
		a, ok := v.addr(field, s)
		if !ok {
			return netip.Prefix{}, false
		}
		return netip.PrefixFrom(a, 32), true
	}
	return v.prefix(field, s)
}

// AllowedPrefix returns an allowlist entry as a prefix (a bare address is a
// /32). The spec must have been validated.
func AllowedPrefix(s string) netip.Prefix {
	if !strings.Contains(s, "/") {
		return netip.PrefixFrom(netip.MustParseAddr(s), 32)
	}
	return netip.MustParsePrefix(s)
}

// MaxSecuredPorts is how many secured ports one fabric can hold: the
// firewall carries a port's number in 16 bits of the packet mark, 0 meaning
// "not a secured port", 0xfffe a tap it does not know and 0xffff the node
// itself.
const MaxSecuredPorts = 0xffff - 2

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	n := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

// forwarders checks that the DNS server can reach its upstreams: from the
// DHCP namespace they go through the router, which routes only its
// allowlist (or stay on-link, inside the fabric).
func (v *validator) forwarders(s *Spec, fabric netip.Prefix, fabricOK bool) {
	if s.DNS == nil {
		return
	}
	for i, fw := range s.DNS.Forwarders {
		a, err := netip.ParseAddr(fw)
		if err != nil {
			ap, err := netip.ParseAddrPort(fw)
			if err != nil {
				continue // reported above
			}
			a = ap.Addr()
		}
		if (fabricOK && fabric.Contains(a)) || a.IsLoopback() {
			// Inside the fabric, or a resolver beside the DNS server in its
			// own namespace: no route through the router needed.
			continue
		}
		reachable := false
		if s.Router != nil {
			for _, al := range s.Router.Allow {
				if p, err := parseAllowed(al.Prefix); err == nil && p.Contains(a) {
					reachable = true
				}
			}
		}
		if !reachable {
			v.addf(fmt.Sprintf("dns.forwarders[%d]", i), "%s is not on the router's allowlist, so forwarded queries would never arrive; add it to router.allow (the seed's UU DNS is 130.238.7.10)", a)
		}
	}
}

func parseAllowed(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		return netip.PrefixFrom(a, a.BitLen()), err
	}
	return netip.ParsePrefix(s)
}
