// Package spec defines the fabric spec, the single source of truth of a
// bothnia deployment, and turns YAML into a validated Spec.
//
// The spec is plain data on purpose: a later control plane feeds the same
// types from a store instead of a file, and the planner never knows which.
package spec

import (
	"fmt"
	"net/netip"
	"os"
	"sort"
)

// Spec is one fabric: a single L2 network (or several isolated ones) spread
// over two sites and joined by a dedicated inter-site link.
type Spec struct {
	Fabric   Fabric           `yaml:"fabric"`
	Sites    map[string]*Site `yaml:"sites"`
	Link     Link             `yaml:"link"`
	Router   *Router          `yaml:"router,omitempty"`
	DNS      *DNS             `yaml:"dns,omitempty"`
	Networks []*Network       `yaml:"networks"`
	// SecurityGroups are Neutron security groups. A group named "default"
	// exists even if not listed: ingress from its own members, all egress.
	SecurityGroups []*SecurityGroup `yaml:"security_groups,omitempty"`
	// DHCPOptions tune what the sites' DHCP servers hand out.
	DHCPOptions DHCPOptions `yaml:"dhcp_options,omitempty"`
	// Firewall picks the renderer: nftables (default) or iptables (the
	// Neutron linuxbridge layout, for sites that must keep iptables).
	Firewall string `yaml:"firewall,omitempty"`
	Lab      Lab    `yaml:"lab,omitempty"`
}

// SecurityGroup is a named set of allow rules; a port with several groups
// allows the union of their rules.
type SecurityGroup struct {
	Name  string    `yaml:"name"`
	Rules []*SGRule `yaml:"rules"`
	// NoDefaultEgress leaves out the two allow-all egress rules (IPv4 and
	// IPv6) that Neutron adds to every new group.
	NoDefaultEgress bool `yaml:"no_default_egress,omitempty"`
}

// SGRule is one Neutron security group rule.
type SGRule struct {
	Direction string `yaml:"direction"`           // ingress or egress
	Ethertype string `yaml:"ethertype,omitempty"` // IPv4 (default) or IPv6
	Protocol  string `yaml:"protocol,omitempty"`  // tcp, udp, icmp, icmpv6, a number, or empty for any
	// PortRange is "N" or "N-M" for tcp/udp. For icmp it is the type, and
	// ICMPCode the code, as Neutron's port_range_min/max are.
	PortRange      string `yaml:"port_range,omitempty"`
	ICMPType       *int   `yaml:"icmp_type,omitempty"`
	ICMPCode       *int   `yaml:"icmp_code,omitempty"`
	RemoteIPPrefix string `yaml:"remote_ip_prefix,omitempty"`
	RemoteGroup    string `yaml:"remote_group,omitempty"`
}

// AddressPair lets a port send from another address (and MAC), as a VM
// that routes a network behind it (the seed's nested OpenStack) must.
type AddressPair struct {
	IP  string `yaml:"ip"`            // an address or a CIDR
	MAC string `yaml:"mac,omitempty"` // default: the port's own
	// Shared lets the pair cover another port's address, the router or
	// a DHCP server, or carry another port's MAC: the pair's owner can
	// then answer as them. Only for addresses ports really share (a VRRP
	// address, a nested cloud's gateway); validation refuses it otherwise.
	Shared bool `yaml:"shared,omitempty"`
}

// Fabric is the address plan shared by both sites.
type Fabric struct {
	Name   string `yaml:"name"`
	CIDR   string `yaml:"cidr"`             // 10.101.0.0/16
	Domain string `yaml:"domain,omitempty"` // DNS domain of VM names
}

// Site is one cloud. Its CIDR is its half of the fabric: the high bit of the
// third octet picks the site (ePouta 0, Knox 1).
type Site struct {
	CIDR  string   `yaml:"cidr"`
	Pools []string `yaml:"pools"` // "first-last" ranges the site allocates from
	// DHCP places a site's DHCP server. At a foreign site it is the site's
	// own Neutron DHCP port: its address is kept out of the pools, and only
	// the lab stands a server in for it.
	DHCP  *DHCP   `yaml:"dhcp,omitempty"`
	Nodes []*Node `yaml:"nodes"`
	// Mode is managed (default: bothnia agents run on the site's nodes) or
	// foreign (a cloud bothnia has an API account on, not root: it never
	// programs those hosts; their ports are remote-group members, get DNS
	// names and are admitted by the managed site's rules).
	Mode string `yaml:"mode,omitempty"`
	// Cloud names the site's cloud in clouds.yaml, for bothnia openstack.
	Cloud string `yaml:"cloud,omitempty"`
}

// Site modes.
const (
	Managed = "managed"
	Foreign = "foreign"
)

// Foreign reports whether bothnia stays off the site's hosts.
func (s *Site) Foreign() bool { return s.Mode == Foreign }

// DHCP places a site's DHCP server: an address of the site's half outside
// every pool, in a namespace on one node.
type DHCP struct {
	Address string `yaml:"address"`
	Node    string `yaml:"node"`
	// Second is a second server on another node of the site: the same
	// fixed leases under its own address, so a VM whose server died
	// renews with the other (rebinding) and keeps its address.
	Second *DHCPServer `yaml:"second,omitempty"`
}

// DHCPServer is one of a site's DHCP servers.
type DHCPServer struct {
	Address string `yaml:"address"`
	Node    string `yaml:"node"`
}

// Servers are the site's DHCP servers, the first one first.
func (d *DHCP) Servers() []DHCPServer {
	out := []DHCPServer{{d.Address, d.Node}}
	if d.Second != nil {
		out = append(out, *d.Second)
	}
	return out
}

// Node is a hypervisor or controller host of a site.
type Node struct {
	Name string `yaml:"name"`
	Role string `yaml:"role"` // controller or compute
	// Underlay is the node's address on the network that carries VXLAN.
	// On VLAN sites it is informational.
	Underlay string `yaml:"underlay"`
}

// Link is the inter-site carrier. Real hosts tag each network's segment as
// an 802.1Q VLAN on Device; the lab (whose kernel has no 802.1Q) carries the
// same segment ID as a VXLAN VNI between the nodes' underlay addresses.
type Link struct {
	Mode        string `yaml:"mode"`                   // vlan or vxlan
	Device      string `yaml:"device,omitempty"`       // VLAN parent, or VXLAN underlay device
	VXLANPort   int    `yaml:"vxlan_port,omitempty"`   // default 4789
	UnderlayMTU int    `yaml:"underlay_mtu,omitempty"` // default 1500
	RateMbit    int    `yaml:"rate_mbit,omitempty"`    // lab WAN shaping, default 1000
}

// Router is the virtual router of the seed: a namespace with a leg in the
// fabric network and a leg on a small transfer network, no default route,
// host routes to an allowlist only, and SNAT. The seed ran it on one node;
// with Nodes it runs on each of them, one replica active at a time, chosen
// through the store by the replicas' agents.
type Router struct {
	Name string `yaml:"name"`
	// Node is the one node of a router without replicas; Nodes lists
	// the replicas (set one or the other).
	Node     string    `yaml:"node,omitempty"`
	Nodes    []string  `yaml:"nodes,omitempty"`
	Network  string    `yaml:"network"`
	Address  string    `yaml:"address"` // 10.101.0.1
	External External  `yaml:"external"`
	Allow    []Allowed `yaml:"allow"`
	SNAT     *bool     `yaml:"snat,omitempty"` // default true
	// HA is the replicas' own link, over which the active replica's
	// connection tracking state reaches the standbys (conntrackd).
	HA *HA `yaml:"ha,omitempty"`
	// Active is the replica that holds the router now. It is never
	// written in a spec: the store's election sets it (NoActive when no
	// replica holds it), and "" means the first replica.
	Active string `yaml:"-"`
}

// NoActive is Router.Active when no replica holds the router.
const NoActive = "-"

// Replicas are the nodes the router runs on.
func (r *Router) Replicas() []string {
	if len(r.Nodes) > 0 {
		return r.Nodes
	}
	if r.Node != "" {
		return []string{r.Node}
	}
	return nil
}

// Serving is the replica that holds the router: the elected one, the
// first replica where nothing was elected (one replica, or a spec
// applied from a file), or "" when the election says none does.
func (r *Router) Serving() string {
	switch r.Active {
	case NoActive:
		return ""
	case "":
		if reps := r.Replicas(); len(reps) > 0 {
			return reps[0]
		}
		return ""
	}
	return r.Active
}

// Replicated reports whether the router has more than one replica.
func (r *Router) Replicated() bool { return len(r.Replicas()) > 1 }

// External is the transfer network between the router's gw leg and the
// host that routes onwards to the allowlisted destinations. Without
// Device it is the seed's gw<->mm veth pair on the router's node, Host
// on mm. With Device it is a segment the replicas' nodes share with that
// host (each node's interface on it is Device): the active replica holds
// Router on a fixed MAC, and Host is the upstream's address there.
type External struct {
	CIDR   string `yaml:"cidr"`             // 10.5.0.0/24
	Router string `yaml:"router"`           // gw end, 10.5.0.2
	Host   string `yaml:"host"`             // mm end, or the upstream, 10.5.0.1
	Device string `yaml:"device,omitempty"` // the replicas' interface on a shared segment
}

// HA configures the replicas' state-sync link: VXLAN on VNI between the
// replicas' underlay addresses, 169.254.192.0/24 inside the router's
// namespaces (Neutron's L3 HA uses the same link-local range).
type HA struct {
	VNI int `yaml:"vni"`
}

// DefaultHAVNI is the state-sync link's VNI when ha is not set.
const DefaultHAVNI = 16777000

// Allowed is one destination the router routes to. Anything else has no
// route and is unreachable from the fabric.
type Allowed struct {
	Name   string `yaml:"name"`
	Prefix string `yaml:"prefix"` // an address or a CIDR
}

// DHCPOptions are the fabric-wide DHCP settings. The interface MTU (option
// 26) is not set here: it follows from the link (VXLAN costs 50 bytes).
type DHCPOptions struct {
	LeaseSeconds int           `yaml:"lease_seconds,omitempty"` // default 86400
	Routes       []StaticRoute `yaml:"routes,omitempty"`        // classless static routes (option 121)
}

// StaticRoute is a classless static route handed to VMs.
type StaticRoute struct {
	Destination string `yaml:"destination"`
	Nexthop     string `yaml:"nexthop"`
}

// DNS is the cache/forwarder every VM uses.
type DNS struct {
	Address string `yaml:"address"`
	// Second is a second resolver: another managed DHCP server's
	// address, where the same DNS server runs. VMs get both.
	Second     string   `yaml:"second,omitempty"`
	Forwarders []string `yaml:"forwarders"`
	// CacheSize bounds the forwarder's cache (entries, default 10000).
	CacheSize int `yaml:"cache_size,omitempty"`
}

// Addresses are the resolvers VMs are given, the first one first.
func (d *DNS) Addresses() []string {
	if d.Second != "" {
		return []string{d.Address, d.Second}
	}
	return []string{d.Address}
}

// Network is one project's L2 segment across both sites.
type Network struct {
	Name    string `yaml:"name"`
	Project string `yaml:"project"`
	ID      string `yaml:"id,omitempty"` // Neutron network UUID; derived from the name if empty
	Segment int    `yaml:"segment"`      // VLAN ID on real hosts, VXLAN VNI in the lab
	VMs     []*VM  `yaml:"vms"`
}

// VM is one instance port on a network.
type VM struct {
	Name   string `yaml:"name"`
	Node   string `yaml:"node"`
	IP     string `yaml:"ip"`
	MAC    string `yaml:"mac"`
	PortID string `yaml:"port_id,omitempty"` // Neutron port UUID; derived if empty
	// SecurityGroups default to ["default"].
	SecurityGroups []string `yaml:"security_groups,omitempty"`
	// PortSecurity false turns off anti-spoofing and security groups for
	// the port, as Neutron's port_security_enabled. Default true.
	PortSecurity        *bool         `yaml:"port_security,omitempty"`
	AllowedAddressPairs []AddressPair `yaml:"allowed_address_pairs,omitempty"`
}

// Secured reports whether the port has port security (the default).
func (vm *VM) Secured() bool { return vm.PortSecurity == nil || *vm.PortSecurity }

// Lab holds what exists only in the one-machine lab.
type Lab struct {
	// Blocked are outside endpoints the lab creates although the router
	// has no route to them: check proves they stay unreachable.
	Blocked []Allowed `yaml:"blocked,omitempty"`
	// Ports are the TCP ports every lab VM and endpoint listens on for
	// check; with security groups some are allowed and some not. Endpoints
	// are probed on the first.
	Ports []int `yaml:"ports,omitempty"`
}

// Load reads and validates a spec file.
func Load(path string) (*Spec, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("spec: %w", err)
	}
	s, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// Parse decodes YAML strictly (unknown fields are errors, so a typo never
// silently drops a setting), applies defaults and validates.
func Parse(b []byte) (*Spec, error) {
	var s Spec
	if err := decode(b, &s); err != nil {
		return nil, err
	}
	s.setDefaults()
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

func (s *Spec) setDefaults() {
	if s.Link.VXLANPort == 0 {
		s.Link.VXLANPort = 4789
	}
	if s.Link.UnderlayMTU == 0 {
		s.Link.UnderlayMTU = 1500
	}
	if s.Link.RateMbit == 0 {
		s.Link.RateMbit = 1000
	}
	if len(s.Lab.Ports) == 0 {
		s.Lab.Ports = []int{7000, 7001}
	}
	if s.DHCPOptions.LeaseSeconds == 0 {
		s.DHCPOptions.LeaseSeconds = 86400
	}
	if s.DNS != nil && s.DNS.CacheSize == 0 {
		s.DNS.CacheSize = 10000
	}
	if s.Firewall == "" {
		s.Firewall = "nftables"
	}
	if s.SecurityGroup("default") == nil {
		s.SecurityGroups = append(s.SecurityGroups, &SecurityGroup{Name: "default", Rules: []*SGRule{
			{Direction: "ingress", Ethertype: "IPv4", RemoteGroup: "default"},
			{Direction: "ingress", Ethertype: "IPv6", RemoteGroup: "default"},
		}})
	}
	for _, g := range s.SecurityGroups {
		for _, r := range g.Rules {
			if r.Ethertype == "" {
				r.Ethertype = "IPv4"
			}
		}
		if !g.NoDefaultEgress {
			g.Rules = append(g.Rules,
				&SGRule{Direction: "egress", Ethertype: "IPv4"},
				&SGRule{Direction: "egress", Ethertype: "IPv6"})
			// The defaults are now explicit rules: marking them keeps a
			// spec that is written back out and read again unchanged.
			g.NoDefaultEgress = true
		}
	}
	for _, n := range s.Networks {
		for _, vm := range n.VMs {
			if len(vm.SecurityGroups) == 0 && vm.Secured() {
				vm.SecurityGroups = []string{"default"}
			}
		}
	}
	if s.Router != nil && s.Router.SNAT == nil {
		t := true
		s.Router.SNAT = &t
	}
	if r := s.Router; r != nil && r.Replicated() && r.HA == nil {
		r.HA = &HA{VNI: DefaultHAVNI}
	}
}

// SiteNames returns the site names in a stable order.
func (s *Spec) SiteNames() []string {
	names := make([]string, 0, len(s.Sites))
	for n := range s.Sites {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// NodeSite returns the site that holds the node, or "" if none does.
func (s *Spec) NodeSite(node string) string {
	for _, sn := range s.SiteNames() {
		for _, n := range s.Sites[sn].Nodes {
			if n.Name == node {
				return sn
			}
		}
	}
	return ""
}

// ForeignNode reports whether a node is at a foreign site.
func (s *Spec) ForeignNode(name string) bool {
	site := s.Sites[s.NodeSite(name)]
	return site != nil && site.Foreign()
}

// NodeNames returns every site's nodes, site by site in SiteNames order.
func (s *Spec) NodeNames() []string {
	var out []string
	for _, sn := range s.SiteNames() {
		for _, n := range s.Sites[sn].Nodes {
			out = append(out, n.Name)
		}
	}
	return out
}

// Node returns the named node, or nil.
func (s *Spec) Node(name string) *Node {
	for _, site := range s.Sites {
		for _, n := range site.Nodes {
			if n.Name == name {
				return n
			}
		}
	}
	return nil
}

// SecurityGroup returns the named group, or nil.
func (s *Spec) SecurityGroup(name string) *SecurityGroup {
	for _, g := range s.SecurityGroups {
		if g.Name == name {
			return g
		}
	}
	return nil
}

// VM returns the named VM and its network, or nils.
func (s *Spec) VM(name string) (*VM, *Network) {
	for _, n := range s.Networks {
		for _, vm := range n.VMs {
			if vm.Name == name {
				return vm, n
			}
		}
	}
	return nil, nil
}

// Network returns the named network, or nil.
func (s *Spec) Network(name string) *Network {
	for _, n := range s.Networks {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// NetworkMTU is the MTU of every port on the fabric: the underlay MTU less
// the carrier's overhead (VXLAN adds 50 bytes; a VLAN tag is carried by the
// NIC, which is assumed to take 1504-byte frames, as the seed's em1 did).
func (s *Spec) NetworkMTU() int {
	if s.Link.Mode == "vxlan" {
		return s.Link.UnderlayMTU - 50
	}
	return s.Link.UnderlayMTU
}

// Range is an inclusive range of IPv4 addresses.
type Range struct{ First, Last netip.Addr }

// ParseRange parses "10.101.0.4-10.101.127.255" (or a single address).
func ParseRange(s string) (Range, error) {
	a, b, found := cut(s, '-')
	first, err := netip.ParseAddr(a)
	if err != nil {
		return Range{}, fmt.Errorf("%q is not a range FIRST-LAST of addresses", s)
	}
	last := first
	if found {
		if last, err = netip.ParseAddr(b); err != nil {
			return Range{}, fmt.Errorf("%q is not a range FIRST-LAST of addresses", s)
		}
	}
	if !first.Is4() || !last.Is4() {
		return Range{}, fmt.Errorf("%q: only IPv4 ranges are supported", s)
	}
	if last.Less(first) {
		return Range{}, fmt.Errorf("%q ends before it starts", s)
	}
	return Range{first, last}, nil
}

func cut(s string, sep byte) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == sep {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// Contains reports whether a lies in the range.
func (r Range) Contains(a netip.Addr) bool {
	return !a.Less(r.First) && !r.Last.Less(a)
}

// Overlaps reports whether two ranges share an address.
func (r Range) Overlaps(o Range) bool {
	return !r.Last.Less(o.First) && !o.Last.Less(r.First)
}

// Within reports whether the whole range lies in p.
func (r Range) Within(p netip.Prefix) bool {
	return p.Contains(r.First) && p.Contains(r.Last)
}

func (r Range) String() string { return r.First.String() + "-" + r.Last.String() }
