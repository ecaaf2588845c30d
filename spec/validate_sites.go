package spec

import (
	"fmt"
	"net/netip"
)

// sites checks the sites: halves inside the fabric, disjoint, pools inside
// their half and apart, nodes named once with a role and an underlay
// address. It records the halves and pools for the later checks.
func (v *validator) sites(s *Spec, siteNames []string) {
	fabric, fabricOK := v.fabric, v.fabricOK
	halves := map[string]netip.Prefix{}
	v.halves = halves
	if len(siteNames) == 0 {
		v.addf("sites", "a fabric needs at least one site")
	}
	for _, sn := range siteNames {
		site := s.Sites[sn]
		f := "sites." + sn
		if site == nil {
			v.addf(f, "empty site")
			continue
		}
		half, ok := v.prefix(f+".cidr", site.CIDR)
		if ok {
			if fabricOK && !(fabric.Contains(half.Addr()) && half.Bits() >= fabric.Bits()) {
				v.addf(f+".cidr", "%s lies outside the fabric %s", half, fabric)
			}
			for on, oh := range halves {
				if oh.Overlaps(half) {
					v.addf(f+".cidr", "%s overlaps site %s's %s; the sites must split the fabric", half, on, oh)
				}
			}
			halves[sn] = half
		}
		for i, ps := range site.Pools {
			pf := fmt.Sprintf("%s.pools[%d]", f, i)
			r, err := ParseRange(ps)
			if err != nil {
				v.addf(pf, "%v", err)
				continue
			}
			if ok && !r.Within(half) {
				v.addf(pf, "%s lies outside %s's half %s", r, sn, half)
			}
			for _, p := range v.pools {
				if p.r.Overlaps(r) {
					v.addf(pf, "%s overlaps %s (%s); pools must not share addresses", r, p.field, p.r)
				}
			}
			v.pools = append(v.pools, pool{pf, r})
		}
		if len(site.Nodes) == 0 {
			v.addf(f+".nodes", "site %s has no nodes", sn)
		}
		switch site.Mode {
		case "", Managed, Foreign:
		default:
			v.addf(f+".mode", "%q is not a mode; use managed (bothnia runs on the site's nodes) or foreign (only an API account there)", site.Mode)
		}
		for i, n := range site.Nodes {
			nf := fmt.Sprintf("%s.nodes[%d]", f, i)
			v.uniqueName("node", nf+".name", n.Name)
			if n.Role != "controller" && n.Role != "compute" {
				v.addf(nf+".role", "%q is not a role; use controller or compute", n.Role)
			}
			if a, ok := v.addr(nf+".underlay", n.Underlay); ok {
				v.claim("underlay", nf+".underlay", a)
			}
			if len(n.Name) > 40 {
				v.addf(nf+".name", "%q is longer than 40 characters", clip(n.Name))
			}
		}
	}

}

func (v *validator) inPool(a netip.Addr) (pool, bool) {
	for _, p := range v.pools {
		if p.r.Contains(a) {
			return p, true
		}
	}
	return pool{}, false
}

// siteOf is the site whose half holds a.
func (v *validator) siteOf(a netip.Addr) string {
	for sn, h := range v.halves {
		if h.Contains(a) {
			return sn
		}
	}
	return ""
}

// infra checks an address that serves the whole fabric: inside it, in no
// pool (a pool address may be handed to a VM at any time).
func (v *validator) infra(field string, a netip.Addr) {
	if v.fabricOK && !v.fabric.Contains(a) {
		v.addf(field, "%s lies outside the fabric %s", a, v.fabric)
	}
	if p, ok := v.inPool(a); ok {
		v.addf(field, "%s lies inside the pool %s (%s); reserve it by moving the pool's bounds", a, p.field, p.r)
	}
	v.claim("", field, a)
}

func (v *validator) nodeRef(s *Spec, field, node string) {
	if s.NodeSite(node) == "" {
		v.addf(field, "unknown node %q; it must be one of the sites' nodes", node)
	}
}
