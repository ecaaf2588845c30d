// Package topology draws a fabric as Graphviz dot: the sites and their
// nodes, the inter-site link, each network with its VLAN or VNI and the
// nodes that carry it, the VMs, the router and its allowlisted endpoints,
// the DHCP and DNS servers; and, given check's results, what failed.
// It is a pure function of the spec and its plan; rendering to SVG is the
// dot program's job.
package topology

import (
	"fmt"
	"os/exec"
	"slices"
	"sort"
	"strings"

	"github.com/bothnia/bothnia/plan"
	"github.com/bothnia/bothnia/spec"
)

// Broken is what check found wrong, by VM: the failed probes' lines.
type Broken map[string][]string

// palette colours networks apart; the n-th network takes the n-th colour.
var palette = []string{"#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"}

// Dot returns the fabric as a dot graph.
func Dot(s *spec.Spec, p *plan.Plan, broken Broken) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("digraph %q {\n", s.Fabric.Name)
	w("  graph [compound=true, rankdir=LR, fontname=Helvetica, label=%q, labelloc=t];\n",
		fmt.Sprintf("fabric %s %s, domain %s", s.Fabric.Name, s.Fabric.CIDR, s.Fabric.Domain))
	w("  node [fontname=Helvetica, fontsize=10];\n  edge [fontname=Helvetica, fontsize=9, dir=none];\n")

	color := map[string]string{}
	for i, n := range s.Networks {
		color[n.Name] = palette[i%len(palette)]
	}
	vmsOn := map[string][]*spec.VM{}
	netOf := map[string]string{}
	for _, n := range s.Networks {
		for _, vm := range n.VMs {
			vmsOn[vm.Node] = append(vmsOn[vm.Node], vm)
			netOf[vm.Name] = n.Name
		}
	}
	services := map[string][]string{} // node -> labels
	for _, sn := range s.SiteNames() {
		if d := s.Sites[sn].DHCP; d != nil {
			for _, srv := range d.Servers() {
				l := "DHCP " + sn + " " + srv.Address
				if s.DNS != nil && slices.Contains(s.DNS.Addresses(), srv.Address) {
					l += " + DNS"
				}
				services[srv.Node] = append(services[srv.Node], l)
			}
		}
	}

	for _, sn := range s.SiteNames() {
		site := s.Sites[sn]
		mode := site.Mode
		if mode == "" {
			mode = spec.Managed
		}
		label := fmt.Sprintf("site %s (%s) %s", sn, mode, site.CIDR)
		if site.Cloud != "" {
			label += ", cloud " + site.Cloud
		}
		style := "rounded"
		if site.Foreign() {
			style = "rounded,dashed"
		}
		w("  subgraph %q {\n    label=%q; style=%q;\n", "cluster_site_"+sn, label, style)
		w("    %q [shape=point, label=\"\", xlabel=%q];\n", "link_"+sn, "uplink")
		for _, n := range site.Nodes {
			w("    subgraph %q {\n      label=%q; style=rounded;\n", "cluster_node_"+n.Name, fmt.Sprintf("%s (%s) %s", n.Name, n.Role, n.Underlay))
			w("      %q [shape=box, style=filled, fillcolor=\"#eeeeee\", label=%q];\n", "node_"+n.Name, n.Name)
			for _, l := range services[n.Name] {
				w("      %q [shape=component, label=%q];\n", "svc_"+n.Name+"_"+l, l)
				w("      %q -> %q [style=dotted];\n", "node_"+n.Name, "svc_"+n.Name+"_"+l)
			}
			if r := s.Router; r != nil && slices.Contains(r.Replicas(), n.Name) {
				id, label := "router", fmt.Sprintf("router %s\n%s, gw %s", r.Name, r.Address, r.External.Router)
				if r.Replicated() {
					id = "router_" + n.Name
					label += "\nreplica"
				}
				w("      %q [shape=doubleoctagon, label=%q];\n", id, label)
			}
			vms := vmsOn[n.Name]
			sort.Slice(vms, func(i, j int) bool { return vms[i].Name < vms[j].Name })
			for _, vm := range vms {
				attrs := fmt.Sprintf("shape=ellipse, color=%q, label=%q", color[netOf[vm.Name]], vm.Name+"\n"+vm.IP)
				if fails := broken[vm.Name]; len(fails) > 0 {
					attrs += fmt.Sprintf(", style=filled, fillcolor=\"#ffcccc\", penwidth=2, tooltip=%q", strings.Join(fails, "\n"))
				}
				w("      %q [%s];\n", "vm_"+vm.Name, attrs)
				w("      %q -> %q;\n", "node_"+n.Name, "vm_"+vm.Name)
			}
			w("    }\n")
			w("    %q -> %q [style=dashed];\n", "node_"+n.Name, "link_"+sn)
		}
		w("  }\n")
	}

	// The inter-site link, between neighbouring sites.
	sites := s.SiteNames()
	for i := 0; i+1 < len(sites); i++ {
		l := fmt.Sprintf("%s link on %s, MTU %d", s.Link.Mode, s.Link.Device, s.Link.UnderlayMTU)
		if s.Link.Device == "" {
			l = fmt.Sprintf("%s link, MTU %d", s.Link.Mode, s.Link.UnderlayMTU)
		}
		w("  %q -> %q [penwidth=3, label=%q];\n", "link_"+sites[i], "link_"+sites[i+1], l)
	}

	// Networks, and the nodes whose plan gives them the network's bridge.
	carriers := map[string][]string{} // bridge -> nodes
	for _, n := range p.Nodes {
		for _, ns := range n.Namespaces {
			if ns.Name != plan.HostNS {
				continue
			}
			for _, l := range ns.Links {
				if l.Kind == plan.Bridge {
					carriers[l.Name] = append(carriers[l.Name], n.Name)
				}
			}
		}
	}
	for _, n := range s.Networks {
		seg := fmt.Sprintf("VLAN %d", n.Segment)
		if s.Link.Mode == "vxlan" {
			seg = fmt.Sprintf("VNI %d", n.Segment)
		}
		br := plan.BridgeName(plan.NetworkID(s, n))
		w("  %q [shape=hexagon, style=filled, fillcolor=%q, fontcolor=white, label=%q];\n",
			"net_"+n.Name, color[n.Name], fmt.Sprintf("network %s (%s)\n%s, bridge %s", n.Name, n.Project, seg, br))
		nodes := carriers[br]
		sort.Strings(nodes)
		for _, node := range nodes {
			w("  %q -> %q [color=%q];\n", "net_"+n.Name, "node_"+node, color[n.Name])
		}
	}

	// The router: its leg, and the allowlist behind it.
	if r := s.Router; r != nil {
		ids := []string{"router"}
		if r.Replicated() {
			ids = nil
			for _, rep := range r.Replicas() {
				ids = append(ids, "router_"+rep)
			}
		}
		for _, id := range ids {
			w("  %q -> %q [color=%q, label=%q];\n", id, "net_"+r.Network, color[r.Network], r.Address)
		}
		w("  subgraph \"cluster_outside\" {\n    label=%q; style=dotted;\n", "outside, via "+r.External.CIDR+fmt.Sprintf(" (SNAT %t)", r.SNAT == nil || *r.SNAT))
		for _, a := range r.Allow {
			w("    %q [shape=note, label=%q];\n", "ep_"+a.Name, a.Name+"\n"+a.Prefix)
		}
		w("  }\n")
		for _, a := range r.Allow {
			for _, id := range ids {
				w("  %q -> %q [label=\"route\"];\n", id, "ep_"+a.Name)
			}
		}
	}
	w("}\n")
	return b.String()
}

// SVG renders a dot graph with Graphviz's dot.
func SVG(dot string) ([]byte, error) {
	if _, err := exec.LookPath("dot"); err != nil {
		return nil, fmt.Errorf("topology: -o svg needs Graphviz's dot (Debian package graphviz); -o dot prints the graph without it")
	}
	cmd := exec.Command("dot", "-Tsvg")
	cmd.Stdin = strings.NewReader(dot)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("topology: dot -Tsvg: %v: %s", err, stderr.String())
	}
	return out, nil
}
