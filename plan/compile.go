package plan

import (
	"fmt"
	"net"
	"net/netip"
	"sort"

	"github.com/bothnia/bothnia/spec"
)

// Role names of namespaces.
const (
	RoleHost   = "host"
	RoleRouter = "router"
	RoleDHCP   = "dhcp"
)

// DefaultAgeingCentis is the kernel's default bridge FDB ageing, 300 s.
const DefaultAgeingCentis = 30000

// builder accumulates per-node state while walking the spec.
type builder struct {
	s      *spec.Spec
	fabric netip.Prefix
	mtu    int
	nodes  map[string]*Node
}

// Compile returns the desired state of every node of a validated spec. It
// reads nothing but its argument and is safe to call repeatedly.
func Compile(s *spec.Spec) (*Plan, error) {
	b := &builder{
		s:      s,
		fabric: netip.MustParsePrefix(s.Fabric.CIDR),
		mtu:    s.NetworkMTU(),
		nodes:  map[string]*Node{},
	}
	for _, sn := range s.SiteNames() {
		for _, n := range s.Sites[sn].Nodes {
			b.nodes[n.Name] = &Node{
				Name: n.Name, Site: sn, Underlay: n.Underlay, Foreign: s.Sites[sn].Foreign(),
				Namespaces: []Namespace{{Name: HostNS, Role: RoleHost}},
			}
		}
	}
	for _, n := range s.Networks {
		if err := b.network(n); err != nil {
			return nil, err
		}
	}
	p := &Plan{Fabric: s.Fabric.Name}
	for _, n := range b.nodes {
		n.sort()
		p.Nodes = append(p.Nodes, *n)
	}
	sort.Slice(p.Nodes, func(i, j int) bool { return p.Nodes[i].Name < p.Nodes[j].Name })
	return p, nil
}

// NetworkID is a network's Neutron-style UUID: the spec's, or one derived
// from the fabric's and the network's names.
func NetworkID(s *spec.Spec, n *spec.Network) string { return s.NetworkID(n) }

// PortID is a VM port's UUID: the spec's, or one derived from its names.
func PortID(s *spec.Spec, n *spec.Network, vm *spec.VM) string { return s.PortID(n, vm) }

// RouterID is the router's UUID, derived from its name.
func RouterID(s *spec.Spec) string { return DeriveID("router", s.Fabric.Name+"/"+s.Router.Name) }

// RouterPortID is the ID of the router's leg on the infra network.
func RouterPortID(s *spec.Spec) string {
	return DeriveID("router-port", RouterID(s)+"/"+NetworkID(s, InfraNetwork(s)))
}

// DHCPPortID is the ID of a site's DHCP server leg on the infra network.
func DHCPPortID(s *spec.Spec, site string) string {
	return DeriveID("dhcp-port", NetworkID(s, InfraNetwork(s))+"/"+site)
}

// DHCPServerPortID is the ID of a site's i-th DHCP server's leg (the
// first one's is DHCPPortID).
func DHCPServerPortID(s *spec.Spec, site string, i int) string {
	if i == 0 {
		return DHCPPortID(s, site)
	}
	return DeriveID("dhcp-port", fmt.Sprintf("%s/%s/%d", NetworkID(s, InfraNetwork(s)), site, i+1))
}

// InfraNetwork is the network the router, DHCP and DNS serve: the router's,
// or the first one where there is no router.
func InfraNetwork(s *spec.Spec) *spec.Network {
	if s.Router != nil {
		return s.Network(s.Router.Network)
	}
	if len(s.Networks) > 0 {
		return s.Networks[0]
	}
	return nil
}

// member is one MAC on a network, the node that hosts it, and its
// address ("" for none).
type member struct{ mac, node, ip string }

func (b *builder) network(n *spec.Network) error {
	s := b.s
	netID := NetworkID(s, n)
	br := BridgeName(netID)
	bits := b.fabric.Bits()
	infra := InfraNetwork(s) == n

	var members []member
	seenMAC := map[string]string{}
	addMember := func(mac, node, ip, what string) error {
		if prev, ok := seenMAC[mac]; ok {
			return fmt.Errorf("plan: network %s: MAC %s of %s is also %s's; set the VM's mac to another value", n.Name, mac, what, prev)
		}
		seenMAC[mac] = what
		members = append(members, member{mac, node, ip})
		return nil
	}

	gateway := ""
	if infra && s.Router != nil {
		gateway = s.Router.Address
	}
	for _, vm := range n.VMs {
		pid := PortID(s, n, vm)
		node := b.nodes[vm.Node]
		node.Ports = append(node.Ports, Port{
			Name: TapName(pid), Bridge: br, Network: n.Name, VM: vm.Name,
			MAC: vm.MAC, IP: fmt.Sprintf("%s/%d", vm.IP, bits), Gateway: gateway, MTU: b.mtu,
		})
		if err := addMember(vm.MAC, vm.Node, vm.IP, "vm "+vm.Name); err != nil {
			return err
		}
	}

	var routers func() // after the DHCP servers, which the router knows as neighbours too
	if infra && s.Router != nil {
		r := s.Router
		rid, pid := RouterID(s), RouterPortID(s)
		mac := InfraMAC(pid)
		// Other nodes reach the router where it serves; with no replica
		// serving, where the first one is, so that nothing points nowhere.
		at := r.Serving()
		if at == "" {
			at = r.Replicas()[0]
		}
		if err := addMember(mac, at, r.Address, "router "+r.Name); err != nil {
			return err
		}
		routers = func() {
			for i, rep := range r.Replicas() {
				b.router(r, rep, i, rid, pid, mac, br, bits, members)
			}
		}
	}
	if infra {
		for _, sn := range s.SiteNames() {
			d := s.Sites[sn].DHCP
			if d == nil {
				continue
			}
			for i, srv := range d.Servers() {
				pid := DHCPServerPortID(s, sn, i)
				mac := InfraMAC(pid)
				if err := addMember(mac, srv.Node, srv.Address, "dhcp "+sn); err != nil {
					return err
				}
				b.dhcp(srv, netID, pid, mac, br, bits, gateway)
			}
		}
	}
	if routers != nil {
		routers()
	}

	// Every node with a port on the network gets the bridge and uplink;
	// the others get nothing, so broadcasts never reach them.
	nodes := map[string]bool{}
	for _, m := range members {
		nodes[m.node] = true
	}
	for name := range nodes {
		host := b.nodes[name].Namespace(HostNS)
		bridge := Link{Name: br, Kind: Bridge, MAC: BridgeMAC(netID, name), MTU: b.mtu, AgeingCentis: DefaultAgeingCentis}
		up := b.uplink(n, name, br, nodes, members)
		if b.nodes[name].Foreign {
			// As the site's Neutron wires it: ARP and ND cross the link.
			up.NeighSuppress = false
		} else {
			up.NoLearning = true
			bridge.Neigh = remoteNeighbours(name, members)
			for _, m := range members {
				if m.node != name {
					up.Static = append(up.Static, m.mac)
				}
			}
			sort.Strings(up.Static)
		}
		host.Links = append(host.Links, bridge, up)
	}
	return nil
}

// remoteNeighbours are the addresses of a network's members on other
// nodes (and the link-local address of each MAC), which the node's bridge
// answers ARP and neighbour solicitations for itself: with neighbour
// suppression on the uplink, a request for a known address never crosses
// the link. Unknown addresses still flood, to the network's nodes only.
func remoteNeighbours(node string, members []member) []Neigh {
	var out []Neigh
	for _, m := range members {
		if m.node == node || m.ip == "" {
			continue
		}
		out = append(out, Neigh{IP: m.ip, MAC: m.mac}, Neigh{IP: LinkLocal(m.mac).String(), MAC: m.mac})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IP < out[j].IP })
	return out
}

// LinkLocal is the IPv6 link-local address a kernel derives from a MAC
// (EUI-64): the address a port may always send from, and the bridge
// answers neighbour solicitations for.
func LinkLocal(mac string) netip.Addr {
	hw, err := net.ParseMAC(mac)
	if err != nil || len(hw) != 6 {
		return netip.Addr{}
	}
	var b [16]byte
	b[0], b[1] = 0xfe, 0x80
	b[8], b[9], b[10], b[11], b[12] = hw[0]^0x02, hw[1], hw[2], 0xff, 0xfe
	b[13], b[14], b[15] = hw[3], hw[4], hw[5]
	return netip.AddrFrom16(b)
}

func (b *builder) uplink(n *spec.Network, node, br string, nodes map[string]bool, members []member) Link {
	s := b.s
	if s.Link.Mode == "vlan" {
		return Link{
			Name: VLANName(s.Link.Device, n.Segment), Kind: VLAN, MTU: b.mtu, Master: br, NeighSuppress: true,
			VLAN: &VLANOpt{Parent: s.Link.Device, ID: n.Segment},
		}
	}
	self := b.nodes[node]
	l := Link{
		Name: VXLANName(n.Segment), Kind: VXLAN, MTU: b.mtu, Master: br, NeighSuppress: true,
		VXLAN: &VXLANOpt{VNI: n.Segment, Local: self.Underlay, Port: s.Link.VXLANPort, Dev: s.Link.Device},
	}
	var peers []string
	for p := range nodes {
		if p != node {
			peers = append(peers, p)
		}
	}
	sort.Strings(peers)
	for _, p := range peers {
		l.FDB = append(l.FDB, FDB{MAC: FloodMAC, Dst: b.nodes[p].Underlay})
	}
	// Learning is off on the tunnel, and every MAC is known from the spec:
	// unicast goes straight to the node that hosts it.
	var known []FDB
	for _, m := range members {
		if m.node != node {
			known = append(known, FDB{MAC: m.mac, Dst: b.nodes[m.node].Underlay})
		}
	}
	sort.Slice(known, func(i, j int) bool { return known[i].MAC < known[j].MAC })
	l.FDB = append(l.FDB, known...)
	return l
}

// router puts a replica of the router on a node. A standby replica has
// every link, address and route of the active one, its fabric and
// external legs down: taking over is setting them up and announcing the
// addresses. Replicas share the state-sync link ha.
func (b *builder) router(r *spec.Router, node string, index int, rid, pid, mac, br string, bits int, members []member) {
	nd := b.nodes[node]
	standby := r.Serving() != node
	nsName := "qrouter-" + rid
	qr, tap := "qr-"+short(pid), TapName(pid)
	ext := netip.MustParsePrefix(r.External.CIDR)
	ns := Namespace{Name: nsName, Role: RoleRouter, Forwarding: true}
	leg := Link{Name: qr, Kind: Veth, MAC: mac, MTU: b.mtu, Addrs: []string{fmt.Sprintf("%s/%d", r.Address, bits)},
		Peer: &Peer{HostNS, tap}, Down: standby}
	if !standby {
		// Every member's MAC is known from the spec, as the bridges'
		// are: a router that takes over, or meets a VM for the first
		// time, forwards at once instead of asking ARP first.
		for _, m := range members {
			if m.ip != "" && m.mac != mac {
				leg.Neigh = append(leg.Neigh, Neigh{IP: m.ip, MAC: m.mac})
			}
		}
		sort.Slice(leg.Neigh, func(i, j int) bool { return leg.Neigh[i].IP < leg.Neigh[j].IP })
	}
	ns.Links = append(ns.Links, leg)
	gw := Link{Name: "gw", Kind: Veth, MTU: b.s.Link.UnderlayMTU, Addrs: []string{fmt.Sprintf("%s/%d", r.External.Router, ext.Bits())},
		Down: standby}
	if r.External.Device != "" {
		// On the shared segment every replica's gw has the same MAC, so
		// a takeover only moves where the upstream's switch sees it.
		gw.Kind, gw.MAC, gw.Macvlan = Macvlan, InfraMAC(DeriveID("router-gw", rid)), &MacvlanOpt{Parent: r.External.Device}
	} else {
		gw.Peer = &Peer{HostNS, "mm"}
	}
	ns.Links = append(ns.Links, gw)
	if r.Replicated() {
		ns.Links = append(ns.Links, b.haLink(r, node, index))
	}
	// No default route: only the allowlist leaves the fabric. A standby
	// has none at all: the kernel routes nothing over a link that is down.
	for _, a := range r.Allow {
		if standby {
			break
		}
		ns.Routes = append(ns.Routes, Route{Dst: spec.AllowedPrefix(a.Prefix).String(), Via: r.External.Host, Dev: "gw"})
	}
	if *r.SNAT {
		ns.SNAT = append(ns.SNAT, SNAT{OutIface: "gw", To: r.External.Router})
	}
	nd.Namespaces = append(nd.Namespaces, ns)
	host := nd.Namespace(HostNS)
	host.Links = append(host.Links, Link{Name: tap, Kind: Veth, MTU: b.mtu, Master: br, Peer: &Peer{nsName, qr}, Down: standby})
	if r.External.Device == "" {
		host.Links = append(host.Links,
			Link{Name: "mm", Kind: Veth, MTU: b.s.Link.UnderlayMTU, Addrs: []string{fmt.Sprintf("%s/%d", r.External.Host, ext.Bits())},
				Peer: &Peer{nsName, "gw"}})
	}
}

// HANet is the replicas' state-sync network inside their router
// namespaces; replica i has address i+1.
var HANet = netip.MustParsePrefix("169.254.192.0/24")

// HAAddr is replica i's address on the state-sync link.
func HAAddr(i int) netip.Addr {
	a := HANet.Addr().As4()
	a[3] = byte(i + 1)
	return netip.AddrFrom4(a)
}

// haLink is the state-sync link of a replica: a VXLAN device in the
// router's namespace whose tunnel runs from the node's underlay address
// (its socket stays in the host namespace) to every other replica's.
func (b *builder) haLink(r *spec.Router, node string, index int) Link {
	l := Link{Name: "ha", Kind: VXLAN, MTU: b.s.Link.UnderlayMTU - 50, // VXLAN's overhead
		Addrs: []string{fmt.Sprintf("%s/%d", HAAddr(index), HANet.Bits())},
		VXLAN: &VXLANOpt{VNI: r.HA.VNI, Local: b.nodes[node].Underlay, Port: b.s.Link.VXLANPort}}
	for _, p := range r.Replicas() {
		if p != node {
			l.FDB = append(l.FDB, FDB{MAC: FloodMAC, Dst: b.nodes[p].Underlay})
		}
	}
	return l
}

func (b *builder) dhcp(d spec.DHCPServer, netID, pid, mac, br string, bits int, gateway string) {
	node := b.nodes[d.Node]
	nsName := "qdhcp-" + netID
	in, tap := "ns-"+short(pid), TapName(pid)
	ns := Namespace{Name: nsName, Role: RoleDHCP}
	ns.Links = append(ns.Links, Link{Name: in, Kind: Veth, MAC: mac, MTU: b.mtu,
		Addrs: []string{fmt.Sprintf("%s/%d", d.Address, bits)}, Peer: &Peer{HostNS, tap}})
	if gateway != "" {
		// The DNS forwarder beside the DHCP server reaches its upstreams
		// through the router, as Neutron's qdhcp namespaces do.
		ns.Routes = append(ns.Routes, Route{Dst: "0.0.0.0/0", Via: gateway, Dev: in})
	}
	node.Namespaces = append(node.Namespaces, ns)
	host := node.Namespace(HostNS)
	host.Links = append(host.Links, Link{Name: tap, Kind: Veth, MTU: b.mtu, Master: br, Peer: &Peer{nsName, in}})
}

var kindOrder = map[Kind]int{Bridge: 0, VLAN: 1, VXLAN: 2, Veth: 3, Macvlan: 4}

// sort puts a node in canonical order: host namespace first, bridges before
// their ports, everything else by name.
func (n *Node) sort() {
	sort.SliceStable(n.Namespaces, func(i, j int) bool {
		a, b := n.Namespaces[i], n.Namespaces[j]
		if (a.Name == HostNS) != (b.Name == HostNS) {
			return a.Name == HostNS
		}
		return a.Name < b.Name
	})
	for i := range n.Namespaces {
		ls := n.Namespaces[i].Links
		sort.Slice(ls, func(i, j int) bool {
			if kindOrder[ls[i].Kind] != kindOrder[ls[j].Kind] {
				return kindOrder[ls[i].Kind] < kindOrder[ls[j].Kind]
			}
			return ls[i].Name < ls[j].Name
		})
		rs := n.Namespaces[i].Routes
		sort.Slice(rs, func(i, j int) bool { return rs[i].Dst < rs[j].Dst })
	}
	sort.Slice(n.Ports, func(i, j int) bool { return n.Ports[i].Name < n.Ports[j].Name })
}
