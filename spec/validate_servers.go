package spec

import (
	"net/netip"
)

// validateDHCP checks each site's DHCP servers: in the site's own half,
// on the site's nodes, a second one on another node, none at a foreign
// site beyond its Neutron's.
func validateDHCP(v *validator, s *Spec, siteNames []string, halves map[string]netip.Prefix, infra func(string, netip.Addr), nodeRef func(string, string)) {
	// DHCP per site: inside the site's own half.
	for _, sn := range siteNames {
		site := s.Sites[sn]
		if site == nil || site.DHCP == nil {
			continue
		}
		for i, d := range site.DHCP.Servers() {
			f := "sites." + sn + ".dhcp"
			if i > 0 {
				f += ".second"
			}
			if a, ok := v.addr(f+".address", d.Address); ok {
				if h, ok := halves[sn]; ok && !h.Contains(a) {
					v.addf(f+".address", "%s lies outside %s's half %s; a site's DHCP server takes an address of its own half", a, sn, h)
				}
				infra(f+".address", a)
			}
			nodeRef(f+".node", d.Node)
			if ns := s.NodeSite(d.Node); ns != "" && ns != sn {
				v.addf(f+".node", "node %q belongs to site %s, not %s", d.Node, ns, sn)
			}
			if i > 0 && d.Node == site.DHCP.Node {
				v.addf(f+".node", "node %q already runs the site's first DHCP server; the second is there for when that node is lost, so put it on another", d.Node)
			}
			if i > 0 && site.Foreign() {
				v.addf(f, "site %s is foreign: its DHCP is its own Neutron's (two DHCP agents per network there is dhcp_agents_per_network); drop second", sn)
			}
		}
	}
}

// validateResolvers checks the resolvers VMs are given: each is a DHCP
// server's address at a managed site, where the DNS server runs beside it.
func validateResolvers(v *validator, s *Spec, siteNames []string) {
	for i, addr := range s.DNS.Addresses() {
		f := "dns.address"
		if i > 0 {
			f = "dns.second"
			if addr == s.DNS.Address {
				v.addf(f, "%s is also dns.address; a second resolver needs a second DHCP server's address", addr)
			}
		}
		a, ok := v.addr(f, addr)
		if !ok {
			continue
		}
		match := false
		for _, sn := range siteNames {
			d := s.Sites[sn].DHCP
			if d == nil {
				continue
			}
			for _, srv := range d.Servers() {
				if srv.Address != a.String() {
					continue
				}
				match = true
				if s.Sites[sn].Foreign() {
					v.addf(f, "%s is foreign site %s's DHCP address, where bothnia runs nothing; use a managed site's DHCP address", a, sn)
				}
			}
		}
		if !match {
			v.addf(f, "%s is no site's DHCP address; the DNS cache runs beside a DHCP server, so use one of theirs", a)
		}
	}
}
