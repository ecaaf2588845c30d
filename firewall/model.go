// Package firewall compiles the spec's security groups into one model per
// node, evaluates it in Go (the reference the renderers are tested
// against), and renders it for nftables and for iptables.
//
// Semantics are Neutron's: a secured port may send only from its own
// IP/MAC pairs or its allowed address pairs, may answer ARP only for
// those, may not act as a DHCP server; traffic is stateful (established
// and related pass, invalid is dropped) in a conntrack zone per network;
// everything a port's security groups do not allow is dropped, in both
// directions. Remote-group rules match the addresses of every port in the
// group on both sites, allowed address pairs included.
package firewall

import (
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"slices"
	"sort"

	"github.com/bothnia/bothnia/plan"
	"github.com/bothnia/bothnia/spec"
)

// Fabric is the firewall view of the whole spec.
type Fabric struct {
	Ports  []Port                    // every secured port, sorted by name
	Groups map[string]*Group         // by name
	Sets   map[string][]netip.Prefix // remote-group members by group, normalised
	// Networks holds the conntrack zone and bridge of each network.
	Networks map[string]Network
	// Open are the taps on the fabric's bridges that pass unfiltered:
	// ports without port security and the router's and DHCP servers'
	// legs. Any other tap on those bridges that is not a secured port
	// passes nothing: a tap plugged before its rules are in is closed.
	Open []OpenPort
}

// OpenPort is a tap that passes unfiltered, and its node.
type OpenPort struct {
	Name, Node string
}

// Network is what the firewall needs of a network.
type Network struct {
	Name    string
	Bridge  string
	Uplink  string       // the bridge's port towards the other nodes (em1.1203, vxlan-1203)
	Segment int          // VLAN ID or VNI: the preferred conntrack zone (see Zones)
	DHCP    []netip.Addr // servers whose offers VMs accept
}

// Port is one secured VM port.
type Port struct {
	Name    string // tap device
	ID      uint16 // dispatch number on its node, never 0
	VM      string
	Node    string
	Network string
	MAC     string
	IP      netip.Addr
	// Pairs are the (prefix, MAC) pairs the port may send from: its own
	// address first, then its allowed address pairs.
	Pairs  []Pair
	Groups []string
}

// Pair is an address (or prefix) and the MAC that may use it.
type Pair struct {
	Prefix netip.Prefix
	MAC    string
}

// Group is a compiled security group.
type Group struct {
	Name  string
	Rules []Rule
}

// Rule is a compiled security group rule. Proto -1 is any protocol;
// ICMPType/ICMPCode -1 are any.
type Rule struct {
	Ingress      bool
	V6           bool
	Proto        int
	PortMin      int // 0: all ports
	PortMax      int
	ICMPType     int
	ICMPCode     int
	RemotePrefix netip.Prefix // zero: any
	RemoteGroup  string
}

// Compile builds the firewall view of a validated spec.
func Compile(s *spec.Spec) (*Fabric, error) {
	f := &Fabric{Groups: map[string]*Group{}, Sets: map[string][]netip.Prefix{}, Networks: map[string]Network{}}
	for _, g := range s.SecurityGroups {
		cg := &Group{Name: g.Name}
		for _, r := range g.Rules {
			cg.Rules = append(cg.Rules, compileRule(r))
		}
		f.Groups[g.Name] = cg
	}
	infra := plan.InfraNetwork(s)
	members := map[string][]netip.Prefix{}
	for _, n := range s.Networks {
		nw := Network{Name: n.Name, Bridge: plan.BridgeName(plan.NetworkID(s, n)), Segment: n.Segment, Uplink: plan.VXLANName(n.Segment)}
		if s.Link.Mode == "vlan" {
			nw.Uplink = plan.VLANName(s.Link.Device, n.Segment)
		}
		if n == infra {
			for _, sn := range s.SiteNames() {
				if d := s.Sites[sn].DHCP; d != nil {
					for _, srv := range d.Servers() {
						nw.DHCP = append(nw.DHCP, netip.MustParseAddr(srv.Address))
					}
				}
			}
		}
		f.Networks[n.Name] = nw
		for _, vm := range n.VMs {
			if !vm.Secured() {
				f.Open = append(f.Open, OpenPort{plan.TapName(plan.PortID(s, n, vm)), vm.Node})
				continue
			}
			mac := canonMAC(vm.MAC)
			ip := netip.MustParseAddr(vm.IP)
			p := Port{
				Name: plan.TapName(plan.PortID(s, n, vm)), VM: vm.Name, Node: vm.Node, Network: n.Name,
				MAC: mac, IP: ip, Groups: append([]string(nil), vm.SecurityGroups...),
				Pairs: []Pair{{netip.PrefixFrom(ip, 32), mac}},
			}
			for _, ap := range vm.AllowedAddressPairs {
				pfx, err := spec.ParsePairIP(ap.IP)
				if err != nil {
					return nil, fmt.Errorf("firewall: vm %s: %w", vm.Name, err)
				}
				m := mac
				if ap.MAC != "" {
					m = canonMAC(ap.MAC)
				}
				p.Pairs = append(p.Pairs, Pair{pfx, m})
			}
			for _, g := range p.Groups {
				for _, pr := range p.Pairs {
					members[g] = append(members[g], pr.Prefix)
				}
			}
			f.Ports = append(f.Ports, p)
		}
	}
	for g, ms := range members {
		f.Sets[g] = Normalize(ms)
	}
	if infra != nil && s.Router != nil {
		for _, rep := range s.Router.Replicas() {
			f.Open = append(f.Open, OpenPort{plan.TapName(plan.RouterPortID(s)), rep})
		}
	}
	if infra != nil {
		for _, sn := range s.SiteNames() {
			if d := s.Sites[sn].DHCP; d != nil {
				for i, srv := range d.Servers() {
					f.Open = append(f.Open, OpenPort{plan.TapName(plan.DHCPServerPortID(s, sn, i)), srv.Node})
				}
			}
		}
	}
	sort.Slice(f.Open, func(i, j int) bool { return f.Open[i].Name < f.Open[j].Name })
	sort.Slice(f.Ports, func(i, j int) bool { return f.Ports[i].Name < f.Ports[j].Name })
	if len(f.Ports) > spec.MaxSecuredPorts {
		return nil, fmt.Errorf("firewall: %d secured ports, more than the %d a fabric can number", len(f.Ports), spec.MaxSecuredPorts)
	}
	assignIDs(f.Ports)
	return f, nil
}

func compileRule(r *spec.SGRule) Rule {
	out := Rule{Ingress: r.Direction == "ingress", V6: r.Ethertype == "IPv6", Proto: r.ProtocolNumber(),
		ICMPType: -1, ICMPCode: -1, RemoteGroup: r.RemoteGroup}
	out.PortMin, out.PortMax = r.Ports()
	if r.ICMPType != nil {
		out.ICMPType = *r.ICMPType
	}
	if r.ICMPCode != nil {
		out.ICMPCode = *r.ICMPCode
	}
	if r.RemoteIPPrefix != "" {
		out.RemotePrefix = netip.MustParsePrefix(r.RemoteIPPrefix)
	}
	return out
}

// assignIDs gives each port a dispatch number from a hash of its name, so a
// port keeps its number as others come and go (the number keys map
// elements; renumbering would rewrite them). Collisions probe onward in
// name order. IDs are per fabric here; a node holds a subset.
func assignIDs(ports []Port) {
	used := map[uint16]bool{}
	for i := range ports {
		h := fnv.New32a()
		h.Write([]byte(ports[i].Name))
		id := freeID(uint16(h.Sum32()%0xfffe)+1, used)
		used[id] = true
		ports[i].ID = id
	}
}

// Node returns the ports on one node.
func (f *Fabric) Node(node string) []Port {
	var out []Port
	for _, p := range f.Ports {
		if p.Node == node {
			out = append(out, p)
		}
	}
	return out
}

// OpenOn returns the names of the taps on one node that pass unfiltered.
func (f *Fabric) OpenOn(node string) []string {
	var out []string
	for _, o := range f.Open {
		if o.Node == node {
			out = append(out, o.Name)
		}
	}
	return out
}

// Uplinks returns every network's uplink, sorted.
func (f *Fabric) Uplinks() []string {
	var out []string
	for _, n := range f.Networks {
		out = append(out, n.Uplink)
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// Bridges returns every network's bridge, sorted.
func (f *Fabric) Bridges() []string {
	var out []string
	for _, n := range f.Networks {
		out = append(out, n.Bridge)
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// Port returns the port of a VM, or nil if it has none or it is unsecured.
func (f *Fabric) Port(vm string) *Port {
	for i := range f.Ports {
		if f.Ports[i].VM == vm {
			return &f.Ports[i]
		}
	}
	return nil
}

// Normalize drops prefixes contained in others and sorts the rest, so that
// the members of an interval set never overlap.
func Normalize(ps []netip.Prefix) []netip.Prefix {
	sort.Slice(ps, func(i, j int) bool {
		if ps[i].Bits() != ps[j].Bits() {
			return ps[i].Bits() < ps[j].Bits()
		}
		return ps[i].Addr().Less(ps[j].Addr())
	})
	// Shorter prefixes come first, so whatever covers p is already kept:
	// look its ancestors up (at most 128 of them) rather than compare it
	// with every kept prefix, which at 10,000 members took most of a
	// compile. A port's few pairs are compared directly: the map cost
	// more than the comparisons, 10,000 times over in a node's render.
	var out []netip.Prefix
	if len(ps) <= 8 {
		for _, p := range ps {
			covered := false
			for _, k := range out {
				covered = covered || (k.Bits() <= p.Bits() && k.Contains(p.Addr()))
			}
			if !covered {
				out = append(out, p)
			}
		}
		sortByAddr(out)
		return out
	}
	kept := make(map[netip.Prefix]bool, len(ps))
	for _, p := range ps {
		covered := false
		for b := 0; b <= p.Bits() && !covered; b++ {
			anc, err := p.Addr().Prefix(b)
			covered = err == nil && kept[anc]
		}
		if !covered {
			kept[p.Masked()] = true
			out = append(out, p)
		}
	}
	sortByAddr(out)
	return out
}

func sortByAddr(ps []netip.Prefix) {
	sort.Slice(ps, func(i, j int) bool {
		if ps[i].Addr() != ps[j].Addr() {
			return ps[i].Addr().Less(ps[j].Addr())
		}
		return ps[i].Bits() < ps[j].Bits()
	})
}

func canonMAC(s string) string {
	hw, err := net.ParseMAC(s)
	if err != nil {
		return s
	}
	return hw.String()
}

// maxPortID is the highest dispatch number: 0 is no port, 0xfffe a tap
// the firewall does not know (idUnknown), and 0xffff the node itself
// (outNode) or, twice, an established connection.
const maxPortID = 0xfffd

// freeID is id if no port uses it, else the next free dispatch number
// (1-maxPortID, wrapping).
func freeID(id uint16, used map[uint16]bool) uint16 {
	for used[id] || id == 0 || id > maxPortID {
		id = id%maxPortID + 1
	}
	return id
}
