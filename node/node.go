// Package node is the one seam between what the fabric says and what a
// host holds. Desired computes, from a validated spec, everything one node
// must hold (pure, no kernel); a Converger brings a host there and says
// what it changed. "bothnia apply", the lab and the agent all go through
// it, so there is one way to converge a node.
package node

import (
	"fmt"
	"strings"

	"github.com/bothnia/bothnia/firewall"
	"github.com/bothnia/bothnia/plan"
	"github.com/bothnia/bothnia/spec"
)

// State is everything one node must hold.
type State struct {
	Name string
	// Plan is the node's links, routes, NAT and namespaces.
	Plan plan.Node
	// Firewall is the fabric-wide firewall view; the node programs its
	// own ports from it (remote-group members come from every node).
	Firewall *firewall.Fabric
	Renderer string // nftables or iptables
	// Services are the DHCP and DNS servers and the router replica's
	// conntrackd the node runs.
	Services []Service
}

// ForeignError refuses to converge a node of a foreign site: bothnia has
// an API account there, not its hosts.
type ForeignError struct{ Node, Site string }

func (e *ForeignError) Error() string {
	return fmt.Sprintf("node %s is at foreign site %s: bothnia never programs its hosts (its own cloud's Neutron does); run agents and apply on managed sites' nodes only", e.Node, e.Site)
}

// Service is a DHCP or DNS server a node runs in one of its namespaces.
type Service struct {
	Kind      string // dhcp, dns or conntrackd
	Site      string // the site a DHCP server serves
	Namespace string // the plan's namespace name (qdhcp-<network id>, qrouter-<router id>)
	Iface     string // the DHCP server's interface, conntrackd's state-sync link
	Addr      string // the server's address (DHCP, DNS), conntrackd's on its link
	// Index is which of the site's DHCP servers, or of the resolvers,
	// this is (0: the first).
	Index int
}

// Name is how the lab and logs name the service: dhcp-<site>, dns,
// conntrackd; a second server's name ends in -2.
func (s Service) Name() string {
	name := s.Kind
	if s.Kind == "dhcp" {
		name += "-" + s.Site
	}
	if s.Index > 0 {
		name += fmt.Sprintf("-%d", s.Index+1)
	}
	return name
}

// Fabric is the desired state of every node of a spec, computed once.
type Fabric struct {
	Spec  *spec.Spec
	Nodes []*State // in the plan's order
}

// Desired computes every node's state from a validated spec.
func Desired(s *spec.Spec) (*Fabric, error) {
	p, err := plan.Compile(s)
	if err != nil {
		return nil, err
	}
	fw, err := firewall.Compile(s)
	if err != nil {
		return nil, err
	}
	out := &Fabric{Spec: s}
	for i := range p.Nodes {
		n := p.Nodes[i]
		out.Nodes = append(out.Nodes, &State{Name: n.Name, Plan: n, Firewall: fw, Renderer: s.Firewall, Services: services(s, &n)})
	}
	return out, nil
}

// Plan returns the nodes' plans as one plan, for what reads them together
// (the lab's cabling, check).
func (f *Fabric) Plan() *plan.Plan {
	p := &plan.Plan{Fabric: f.Spec.Fabric.Name}
	for _, n := range f.Nodes {
		p.Nodes = append(p.Nodes, n.Plan)
	}
	return p
}

// Node returns one node's state, or an error naming the spec's nodes.
func (f *Fabric) Node(name string) (*State, error) {
	for _, n := range f.Nodes {
		if n.Name == name {
			return n, nil
		}
	}
	var names []string
	for _, n := range f.Nodes {
		names = append(names, n.Name)
	}
	return nil, fmt.Errorf("node: no node %q in the fabric %s; it has %v", name, f.Spec.Fabric.Name, names)
}

// services places each site's DHCP server, and the DNS server beside the
// DHCP server whose address it answers on, in the DHCP namespaces of the
// node the spec names.
func services(s *spec.Spec, n *plan.Node) []Service {
	var out []Service
	for _, ns := range n.Namespaces {
		// A router replica's connection tracking reaches the other
		// replicas over its state-sync link.
		if ns.Role != plan.RoleRouter {
			continue
		}
		for _, l := range ns.Links {
			if l.Name == "ha" && len(l.Addrs) > 0 {
				addr, _, _ := strings.Cut(l.Addrs[0], "/")
				out = append(out, Service{Kind: "conntrackd", Namespace: ns.Name, Iface: l.Name, Addr: addr})
			}
		}
	}
	for _, sn := range s.SiteNames() {
		d := s.Sites[sn].DHCP
		if d == nil {
			continue
		}
		for i, srv := range d.Servers() {
			if srv.Node != n.Name {
				continue
			}
			for _, ns := range n.Namespaces {
				if ns.Role != plan.RoleDHCP {
					continue
				}
				out = append(out, Service{Kind: "dhcp", Site: sn, Index: i, Namespace: ns.Name, Iface: ns.Links[0].Name, Addr: srv.Address})
				if s.DNS != nil {
					for j, a := range s.DNS.Addresses() {
						if a == srv.Address {
							out = append(out, Service{Kind: "dns", Site: sn, Index: j, Namespace: ns.Name, Addr: a})
						}
					}
				}
			}
		}
	}
	return out
}
