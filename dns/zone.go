// Package dns is the fabric's DNS server: authoritative for the VM names
// of both sites under the fabric's domain (A, and PTR for the fabric's
// addresses), a caching forwarder for everything else, and closed to
// sources outside the fabric.
package dns

import (
	"net/netip"
	"strings"

	mdns "github.com/miekg/dns"

	"github.com/bothnia/bothnia/plan"
	"github.com/bothnia/bothnia/spec"
)

// Zone is the authoritative data, plain so that a store can produce it.
type Zone struct {
	Domain  string // FQDN with trailing dot
	Reverse string // in-addr.arpa zone of the fabric
	Fabric  netip.Prefix
	A       map[string][]netip.Addr // FQDN -> addresses
	PTR     map[string]string       // reverse FQDN -> FQDN
}

// ZoneFromSpec names every VM of the infrastructure network (the one DHCP
// and DNS serve), on both sites.
func ZoneFromSpec(s *spec.Spec) *Zone {
	fabric := netip.MustParsePrefix(s.Fabric.CIDR)
	z := &Zone{
		Domain:  mdns.Fqdn(strings.ToLower(s.Fabric.Domain)),
		Reverse: reverseZone(fabric),
		Fabric:  fabric,
		A:       map[string][]netip.Addr{},
		PTR:     map[string]string{},
	}
	n := plan.InfraNetwork(s)
	if n == nil || s.Fabric.Domain == "" {
		return z
	}
	for _, vm := range n.VMs {
		name := mdns.Fqdn(strings.ToLower(vm.Name) + "." + strings.TrimSuffix(z.Domain, "."))
		a := netip.MustParseAddr(vm.IP)
		z.A[name] = append(z.A[name], a)
		rev, _ := mdns.ReverseAddr(a.String())
		z.PTR[rev] = name
	}
	return z
}

// reverseZone is the in-addr.arpa name covering the prefix, to whole octets.
func reverseZone(p netip.Prefix) string {
	b := p.Addr().As4()
	octets := p.Bits() / 8
	var parts []string
	for i := octets - 1; i >= 0; i-- {
		parts = append(parts, itoa(int(b[i])))
	}
	return strings.Join(append(parts, "in-addr.arpa."), ".")
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var s []byte
	for i > 0 {
		s = append([]byte{byte('0' + i%10)}, s...)
		i /= 10
	}
	return string(s)
}

// Authoritative reports whether the zone answers for the name.
func (z *Zone) Authoritative(name string) bool {
	name = strings.ToLower(name)
	return (z.Domain != "." && mdns.IsSubDomain(z.Domain, name)) || mdns.IsSubDomain(z.Reverse, name)
}
