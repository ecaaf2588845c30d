// Package plan turns a validated spec into the desired state of every node:
// namespaces, links, addresses, routes, forwarding entries and NAT. It is a
// pure function of the spec; appliers take only this data.
package plan

import (
	"fmt"
	"reflect"
	"strings"
)

// Plan is the desired state of every node of a fabric.
type Plan struct {
	Fabric string
	Nodes  []Node // sorted by name
}

// Node is one host's desired state.
type Node struct {
	Name     string
	Site     string
	Underlay string
	// Foreign marks a node of a foreign site: bothnia never converges it.
	// Its plan is the wiring its own cloud's Neutron gives it (a learning
	// bridge on the link, no neighbour suppression), which only the lab
	// builds, standing in for that cloud.
	Foreign bool
	// Namespaces come host first, then by name. The host namespace is
	// the root namespace on a real host and a per-node namespace in the lab.
	Namespaces []Namespace
	// Ports are VM interfaces the hypervisor creates (Nova on a real host,
	// the lab here); bothnia plugs them into their bridge but never
	// creates or deletes them.
	Ports []Port
}

// HostNS names the node's own namespace within a plan.
const HostNS = ""

// Namespace is a network namespace on a node.
type Namespace struct {
	Name       string // HostNS, qrouter-<id>, qdhcp-<id>
	Role       string // host, router, dhcp
	Forwarding bool   // net.ipv4.ip_forward (only planned for namespaces bothnia owns)
	Links      []Link
	Routes     []Route
	SNAT       []SNAT
}

// Kind is the kind of a link.
type Kind string

// Link kinds.
const (
	Bridge  Kind = "bridge"
	Veth    Kind = "veth"
	VXLAN   Kind = "vxlan"
	VLAN    Kind = "vlan"
	Macvlan Kind = "macvlan"
)

// Link is one interface bothnia owns.
type Link struct {
	Name   string
	Kind   Kind
	MAC    string // empty: the kernel's choice
	MTU    int
	Master string   // bridge this link is a port of
	Addrs  []string // CIDRs
	// AgeingCentis is a bridge's FDB ageing time in centiseconds. The seed
	// set 0 (hub mode) to paper over its learning bug; bothnia fixes the
	// bridge MAC instead and keeps normal ageing.
	AgeingCentis int
	Peer         *Peer     // veth
	VXLAN        *VXLANOpt // vxlan
	VLAN         *VLANOpt  // vlan
	Macvlan      *MacvlanOpt
	FDB          []FDB // static entries on a vxlan device
	// Down keeps the link administratively down: a standby router
	// replica's legs, which must not answer for the active one's
	// addresses until it takes over.
	Down bool
	// NeighSuppress makes a bridge port (the uplink) one that ARP and
	// neighbour solicitations the bridge can answer are not sent to.
	NeighSuppress bool
	// NoLearning makes a bridge port (a managed node's uplink) one the
	// bridge learns no MAC from: every other node's member is a Static
	// entry, and a frame from the wire that claims a MAC of this node's
	// (one the fibre reflects, the seed's bug; one another site forges)
	// cannot move it onto the uplink.
	NoLearning bool
	// Static are MACs a bridge port (the uplink) has static forwarding
	// entries for: the other nodes' members, known from the spec, so the
	// bridge can answer for them before it has seen them.
	Static []string
	// Neigh are permanent neighbour entries: on a bridge, the addresses
	// it answers for; on the serving router's fabric leg, every member of
	// its network, so that it never waits for ARP.
	Neigh []Neigh
}

// Neigh is a neighbour entry: an address and its MAC.
type Neigh struct {
	IP, MAC string
}

// Peer is the other end of a veth, itself a Link in its own namespace.
type Peer struct {
	Namespace string
	Name      string
}

// VXLANOpt configures a VXLAN tunnel endpoint.
type VXLANOpt struct {
	VNI   int
	Local string // this node's underlay address
	Port  int
	Dev   string // underlay device, empty for the kernel's route lookup
}

// VLANOpt configures an 802.1Q sub-interface.
type VLANOpt struct {
	Parent string
	ID     int
}

// MacvlanOpt configures a macvlan (bridge mode) on a device of the host
// namespace; the link itself may live in another of the node's namespaces.
type MacvlanOpt struct {
	Parent string
}

// FDB is a static forwarding entry on a VXLAN device. The all-zero MAC is
// the flood list: broadcast, unknown unicast and multicast go to every such
// destination, and only nodes with ports on the network are listed.
type FDB struct {
	MAC string
	Dst string
}

// FloodMAC is the MAC of flood-list entries.
const FloodMAC = "00:00:00:00:00:00"

// Route is a static route bothnia owns.
type Route struct {
	Dst string // CIDR
	Via string // empty for on-link
	Dev string
}

// SNAT rewrites the source of packets leaving OutIface to To.
type SNAT struct {
	OutIface string
	To       string
}

// Port is a VM's interface on a node.
type Port struct {
	Name    string // tap<port id>, the host end
	Bridge  string
	Network string
	VM      string
	MAC     string
	IP      string // CIDR
	Gateway string // empty where the network has no router
	MTU     int
}

// Node returns the named node's plan, or nil.
func (p *Plan) Node(name string) *Node {
	for i := range p.Nodes {
		if p.Nodes[i].Name == name {
			return &p.Nodes[i]
		}
	}
	return nil
}

// Namespace returns the named namespace of the node, or nil.
func (n *Node) Namespace(name string) *Namespace {
	for i := range n.Namespaces {
		if n.Namespaces[i].Name == name {
			return &n.Namespaces[i]
		}
	}
	return nil
}

// Equal reports whether two node plans ask for the same state; an applier
// given an Equal plan twice has nothing to do the second time.
func (n *Node) Equal(o *Node) bool { return reflect.DeepEqual(n, o) }

// String is the canonical text form of a plan, used by golden tests and by
// `bothnia plan`.
func (p *Plan) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "fabric %s\n", p.Fabric)
	for _, n := range p.Nodes {
		b.WriteString(n.String())
	}
	return b.String()
}

func (n *Node) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "node %s site %s underlay %s", n.Name, n.Site, n.Underlay)
	if n.Foreign {
		b.WriteString(" foreign")
	}
	b.WriteByte('\n')
	for _, ns := range n.Namespaces {
		name := ns.Name
		if name == HostNS {
			name = "(host)"
		}
		fmt.Fprintf(&b, "  netns %s role %s", name, ns.Role)
		if ns.Forwarding {
			b.WriteString(" forwarding")
		}
		b.WriteString("\n")
		for _, l := range ns.Links {
			fmt.Fprintf(&b, "    link %s\n", l.String())
			for _, f := range l.FDB {
				fmt.Fprintf(&b, "      fdb %s dst %s\n", f.MAC, f.Dst)
			}
			for _, m := range l.Static {
				fmt.Fprintf(&b, "      fdb %s master static\n", m)
			}
			for _, nb := range l.Neigh {
				fmt.Fprintf(&b, "      neigh %s lladdr %s\n", nb.IP, nb.MAC)
			}
		}
		for _, r := range ns.Routes {
			fmt.Fprintf(&b, "    route %s\n", r.String())
		}
		for _, s := range ns.SNAT {
			fmt.Fprintf(&b, "    snat oif %s to %s\n", s.OutIface, s.To)
		}
	}
	for _, p := range n.Ports {
		fmt.Fprintf(&b, "  port %s vm %s network %s bridge %s mac %s ip %s gw %s mtu %d\n",
			p.Name, p.VM, p.Network, p.Bridge, p.MAC, p.IP, orDash(p.Gateway), p.MTU)
	}
	return b.String()
}

func (l *Link) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", l.Name, l.Kind)
	switch {
	case l.Peer != nil:
		pns := l.Peer.Namespace
		if pns == HostNS {
			pns = "(host)"
		}
		fmt.Fprintf(&b, " peer %s/%s", pns, l.Peer.Name)
	case l.VXLAN != nil:
		fmt.Fprintf(&b, " vni %d local %s port %d dev %s nolearning", l.VXLAN.VNI, l.VXLAN.Local, l.VXLAN.Port, orDash(l.VXLAN.Dev))
	case l.VLAN != nil:
		fmt.Fprintf(&b, " parent %s id %d", l.VLAN.Parent, l.VLAN.ID)
	case l.Macvlan != nil:
		fmt.Fprintf(&b, " parent (host)/%s mode bridge", l.Macvlan.Parent)
	case l.Kind == Bridge:
		fmt.Fprintf(&b, " ageing %ds", l.AgeingCentis/100)
	}
	if l.MAC != "" {
		fmt.Fprintf(&b, " mac %s", l.MAC)
	}
	fmt.Fprintf(&b, " mtu %d", l.MTU)
	if l.Master != "" {
		fmt.Fprintf(&b, " master %s", l.Master)
	}
	if l.NeighSuppress {
		b.WriteString(" neigh_suppress")
	}
	if l.NoLearning {
		b.WriteString(" port_learning off")
	}
	for _, a := range l.Addrs {
		fmt.Fprintf(&b, " addr %s", a)
	}
	if l.Down {
		b.WriteString(" down")
	}
	return b.String()
}

func (r Route) String() string {
	s := r.Dst
	if r.Via != "" {
		s += " via " + r.Via
	}
	return s + " dev " + r.Dev
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
