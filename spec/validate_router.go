package spec

import "fmt"

// router checks the router: its network, its gateway address (inside the
// fabric, in no pool), the transfer network outside the fabric with two
// distinct ends in it, and an allowlist without the fabric or a default.
func (v *validator) router(s *Spec, r *Router, nodeRef func(field, node string)) {
	fabric, fabricOK := v.fabric, v.fabricOK
	if r.Name == "" {
		v.addf("router.name", "the router needs a name")
	}
	validateReplicas(v, s, r, nodeRef)
	if s.Network(r.Network) == nil {
		v.addf("router.network", "unknown network %q; the router needs a leg in one of the networks", r.Network)
	}
	if a, ok := v.addr("router.address", r.Address); ok {
		// The gateway is the one address that may sit in either half
		// (the seed's 10.101.0.1 lives on Knox): only the fabric bounds it.
		if fabricOK && !fabric.Contains(a) {
			v.addf("router.address", "gateway %s lies outside the fabric %s; VMs could not reach it on-link", a, fabric)
		}
		v.infra("router.address", a)
	}
	ext, extOK := v.prefix("router.external.cidr", r.External.CIDR)
	if extOK && fabricOK && ext.Overlaps(fabric) {
		v.addf("router.external.cidr", "%s overlaps the fabric %s; the transfer network must be outside it", ext, fabric)
	}
	ga, gOK := v.addr("router.external.router", r.External.Router)
	ha, hOK := v.addr("router.external.host", r.External.Host)
	if extOK && gOK && !ext.Contains(ga) {
		v.addf("router.external.router", "%s lies outside %s", ga, ext)
	}
	if extOK && hOK && !ext.Contains(ha) {
		v.addf("router.external.host", "%s lies outside %s", ha, ext)
	}
	if gOK && hOK && ga == ha {
		v.addf("router.external.host", "%s is also the router's end; the two ends need two addresses", ha)
	}
	if len(r.Allow) == 0 {
		v.addf("router.allow", "no destinations are allowed; list at least one, or drop the router")
	}
	for i, al := range r.Allow {
		af := fmt.Sprintf("router.allow[%d]", i)
		p, ok := allowedPrefix(v, af+".prefix", al.Prefix)
		if ok && fabricOK && p.Overlaps(fabric) {
			v.addf(af+".prefix", "%s overlaps the fabric %s; the fabric is routed on-link, not through gw", p, fabric)
		}
		if ok && p.Bits() == 0 {
			v.addf(af+".prefix", "%s is a default route; the router must not have one (list the destinations instead)", p)
		}
	}
}
