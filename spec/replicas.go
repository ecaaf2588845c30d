package spec

import (
	"fmt"
	"net"
)

// validateReplicas checks where the router runs: one node or a list of
// replicas, each a managed node; replicas need a shared external segment
// (a veth pair on one node cannot move) and a state-sync VNI of their own.
func validateReplicas(v *validator, s *Spec, r *Router, nodeRef func(field, node string)) {
	switch {
	case r.Node != "" && len(r.Nodes) > 0:
		v.addf("router.nodes", "router has both node %q and nodes; list every replica under nodes and drop node", r.Node)
		return
	case r.Node == "" && len(r.Nodes) == 0:
		v.addf("router.node", "the router needs a node (or nodes: the replicas)")
		return
	}
	field := "router.node"
	seen := map[string]bool{}
	for i, n := range r.Replicas() {
		if len(r.Nodes) > 0 {
			field = fmt.Sprintf("router.nodes[%d]", i)
		}
		if seen[n] {
			v.addf(field, "node %q is listed twice; each replica needs a node of its own", n)
			continue
		}
		seen[n] = true
		nodeRef(field, n)
		if s.ForeignNode(n) {
			v.addf(field, "node %q is at foreign site %s, where bothnia runs nothing; put the router on a managed site's node", n, s.NodeSite(n))
		}
		if len(r.Nodes) > 1 {
			if nd := s.Node(n); nd != nil && net.ParseIP(nd.Underlay).To4() == nil {
				v.addf(field, "replica node %q has no IPv4 underlay address; the replicas' state-sync link runs between underlay addresses", n)
			}
		}
	}
	if !r.Replicated() {
		return
	}
	if r.External.Device == "" {
		v.addf("router.external.device", "a router with %d replicas needs a shared external segment: set device to each replica node's interface on it (the upstream %s sits there too)", len(r.Nodes), r.External.Host)
	}
	if r.HA != nil {
		if r.HA.VNI < 1 || r.HA.VNI > 1<<24-1 {
			v.addf("router.ha.vni", "%d is not a VXLAN VNI (1-16777215)", r.HA.VNI)
		}
		for _, n := range s.Networks {
			if n.Segment == r.HA.VNI {
				v.addf("router.ha.vni", "%d is also network %s's segment; the state-sync link needs a VNI of its own", r.HA.VNI, n.Name)
			}
		}
	}
}
