// Package trace explains, stage by stage, what the fabric does with one
// packet, as ovn-trace does for OVN: the source port's anti-spoofing, its
// egress groups and the rule that matched, the bridge, the uplink and the
// node it leads to, the destination's ingress groups, or the router, its
// allowlist route and SNAT; then the verdict. It walks the same model the
// agents program (plan and firewall), so what it says is what the nodes
// hold. It is pure: no kernel, no store.
package trace

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/bothnia/bothnia/firewall"
	"github.com/bothnia/bothnia/plan"
	"github.com/bothnia/bothnia/spec"
)

// Request is the packet to trace.
type Request struct {
	From, To string // a VM name, or an address
	Proto    string // tcp, udp, icmp (default icmp)
	Port     int    // destination port (tcp/udp)
	SrcIP    string // forge the source address (default: the VM's)
	SrcMAC   string // forge the source MAC (default: the VM's)
}

// Stage is one step: where, what decided, the outcome.
type Stage struct {
	Stage  string `json:"stage"`
	Object string `json:"object"`
	Result string `json:"result"`
	// Cloud names the foreign site whose own cloud decides this stage
	// (its Neutron's rules, on its hosts): the model follows Neutron's
	// semantics there, but bothnia cannot see into those rules.
	Cloud string `json:"cloud,omitempty"`
}

// Trace is the answer.
type Trace struct {
	From    string  `json:"from"`
	To      string  `json:"to"`
	Packet  string  `json:"packet"`
	Stages  []Stage `json:"stages"`
	Verdict string  `json:"verdict"` // delivered or dropped
	// The packet itself, for sending it for real (trace --kernel).
	Src   netip.Addr `json:"src"`
	Dst   netip.Addr `json:"dst"`
	Proto int        `json:"proto"`
	DPort int        `json:"dport,omitempty"`
	// The nodes on the model's path, to hold the kernel's to it: the
	// source VM's, the destination VM's (when the packet reaches one) and
	// the router's (when it is routed).
	SrcNode    string `json:"src_node"`
	DstNode    string `json:"dst_node,omitempty"`
	RouterNode string `json:"router_node,omitempty"`
	// Kernel is the path the kernel took (trace --kernel), if asked.
	Kernel *Kernel `json:"kernel,omitempty"`
}

// Kernel is what nftables tracing saw of a packet sent for real.
type Kernel struct {
	Lines   []string `json:"lines"`   // nft monitor trace, by node
	Verdict string   `json:"verdict"` // delivered or dropped
	Hops    []Hop    `json:"hops"`    // where the kernel saw the packet, in order
	// Disagreements of the kernel's path with the model's stages (see
	// Compare); the verdicts are compared apart.
	Disagreements []string `json:"disagreements,omitempty"`
}

type endpoint struct {
	name string
	vm   *spec.VM
	net  *spec.Network
	addr netip.Addr
}

func resolve(s *spec.Spec, what string) (endpoint, error) {
	if vm, n := s.VM(what); vm != nil {
		return endpoint{vm.Name, vm, n, netip.MustParseAddr(vm.IP)}, nil
	}
	a, err := netip.ParseAddr(what)
	if err != nil {
		if s.Router != nil {
			for _, al := range s.Router.Allow {
				if al.Name == what {
					return endpoint{name: what, addr: spec.AllowedPrefix(al.Prefix).Addr()}, nil
				}
			}
		}
		return endpoint{}, fmt.Errorf("trace: %q is neither a VM, an allowlisted endpoint nor an address", what)
	}
	return endpoint{name: what, addr: a}, nil
}

// Run traces one packet through the fabric of a validated spec.
func Run(s *spec.Spec, r Request) (*Trace, error) {
	p, err := plan.Compile(s)
	if err != nil {
		return nil, err
	}
	f, err := firewall.Compile(s)
	if err != nil {
		return nil, err
	}
	from, err := resolve(s, r.From)
	if err != nil {
		return nil, err
	}
	if from.vm == nil {
		return nil, fmt.Errorf("trace: FROM must be a VM; %q is not one", r.From)
	}
	to, err := resolve(s, r.To)
	if err != nil {
		return nil, err
	}
	if to.vm == nil { // an address: a VM of the source's network that has it?
		for _, vm := range from.net.VMs {
			if vm.IP == to.addr.String() {
				to = endpoint{vm.Name, vm, from.net, to.addr}
			}
		}
	}
	fr := firewall.Frame{EtherType: firewall.EtherIPv4, SrcMAC: strings.ToLower(from.vm.MAC), Src: from.addr, Dst: to.addr, SPort: 40000}
	if r.SrcIP != "" {
		if fr.Src, err = netip.ParseAddr(r.SrcIP); err != nil {
			return nil, fmt.Errorf("trace: --src-ip %q: %w", r.SrcIP, err)
		}
	}
	if r.SrcMAC != "" {
		fr.SrcMAC = strings.ToLower(r.SrcMAC)
	}
	if fr.Src.Is6() {
		fr.EtherType = firewall.EtherIPv6
	}
	switch r.Proto {
	case "tcp":
		fr.Proto, fr.DPort = 6, r.Port
	case "udp":
		fr.Proto, fr.DPort = 17, r.Port
	case "", "icmp":
		fr.Proto, fr.SPort, fr.DPort = 1, 8, 0
		if fr.EtherType == firewall.EtherIPv6 {
			fr.Proto, fr.SPort = 58, 128
		}
	default:
		return nil, fmt.Errorf("trace: --proto %q: use tcp, udp or icmp", r.Proto)
	}
	fr.From = f.Port(from.vm.Name)
	if to.vm != nil {
		fr.To = f.Port(to.vm.Name)
	}
	t := &Trace{From: from.name, To: to.name, Packet: packet(fr), Src: fr.Src, Dst: fr.Dst, Proto: fr.Proto, DPort: fr.DPort, SrcNode: from.vm.Node}
	if to.vm != nil && to.net == from.net {
		t.DstNode = to.vm.Node
	}
	add := func(stage, obj, res string) {
		t.Stages = append(t.Stages, Stage{Stage: stage, Object: obj, Result: res})
	}
	srcNode := p.Node(from.vm.Node)
	br := plan.BridgeName(plan.NetworkID(s, from.net))
	add("source", fmt.Sprintf("vm %s on node %s, port %s, network %s (bridge %s)", from.vm.Name, from.vm.Node, plan.TapName(plan.PortID(s, from.net, from.vm)), from.net.Name, br), "sent")
	if fr.From == nil {
		add("anti-spoofing", "port security off on "+from.vm.Name, "not checked")
	}

	// The firewall of both ports, as the evaluator decides it.
	v := f.Decide(fr)
	var ingress []Stage
	for _, st := range v.Stages {
		stage := Stage{Stage: st.Name, Object: st.Object, Result: st.Result}
		node := from.vm.Node
		if st.Name == "ingress" || st.Name == "bridge" {
			if to.vm != nil {
				node = to.vm.Node
			}
		}
		if s.ForeignNode(node) && st.Name != "node" {
			stage.Cloud = s.NodeSite(node)
		}
		if st.Name == "ingress" || st.Name == "bridge" {
			ingress = append(ingress, stage)
			continue
		}
		t.Stages = append(t.Stages, stage)
	}
	if !v.Allowed && len(ingress) == 0 {
		t.Verdict = "dropped"
		return t, nil
	}

	switch {
	case to.vm != nil && to.net == from.net:
		if to.vm.Node == from.vm.Node {
			add("bridge", fmt.Sprintf("%s on %s: %s is a local port", br, from.vm.Node, to.vm.Name), "forward")
		} else {
			how := "static, from the spec"
			if s.ForeignNode(from.vm.Node) {
				how = "learned: a foreign site's bridge, wired by its own cloud"
			}
			add("bridge", fmt.Sprintf("%s on %s: fdb %s on the uplink (%s)", br, from.vm.Node, strings.ToLower(to.vm.MAC), how), "forward")
			add("uplink", uplink(s, from.net, srcNode, p.Node(to.vm.Node)), "carried")
			add("bridge", fmt.Sprintf("%s on %s: %s is a local port", br, to.vm.Node, to.vm.Name), "forward")
		}
		t.Stages = append(t.Stages, ingress...)
		if fr.To == nil {
			add("ingress", "port security off on "+to.vm.Name, "not checked")
		}
	case to.vm != nil:
		add("bridge", fmt.Sprintf("%s is in network %s, %s in %s: no path between networks", to.vm.Name, to.net.Name, from.vm.Name, from.net.Name), "drop")
		t.Verdict = "dropped"
		return t, nil
	default:
		if !routeOut(s, p, from, to, t, add) {
			t.Verdict = "dropped"
			return t, nil
		}
	}
	if v.Allowed {
		t.Verdict = "delivered"
	} else {
		t.Verdict = "dropped"
	}
	return t, nil
}

func uplink(s *spec.Spec, n *spec.Network, from, to *plan.Node) string {
	if s.Link.Mode == "vlan" {
		return fmt.Sprintf("%s tagged %d, from %s to %s", plan.VLANName(s.Link.Device, n.Segment), n.Segment, from.Name, to.Name)
	}
	return fmt.Sprintf("%s (VNI %d) from %s %s to %s %s", plan.VXLANName(n.Segment), n.Segment, from.Name, from.Underlay, to.Name, to.Underlay)
}

// routeOut follows a packet to an address outside the fabric: the router,
// its allowlist and SNAT.
func routeOut(s *spec.Spec, p *plan.Plan, from, to endpoint, t *Trace, add func(string, string, string)) bool {
	fabric := netip.MustParsePrefix(s.Fabric.CIDR)
	if fabric.Contains(to.addr) {
		add("bridge", fmt.Sprintf("no VM of network %s has %s", from.net.Name, to.addr), "flooded, unanswered")
		return false
	}
	if s.Router == nil || s.Router.Network != from.net.Name {
		add("route", fmt.Sprintf("network %s has no router", from.net.Name), "drop")
		return false
	}
	r := s.Router
	at := r.Serving()
	if at == "" {
		add("router", fmt.Sprintf("no replica of router %s serves", r.Name), "drop")
		return false
	}
	add("router", fmt.Sprintf("qrouter-%s on %s, gateway %s", plan.RouterID(s), at, r.Address), "received")
	t.RouterNode = at
	for _, al := range r.Allow {
		if pfx := spec.AllowedPrefix(al.Prefix); pfx.Contains(to.addr) {
			add("route", fmt.Sprintf("allowlist %s (%s) via %s dev gw", al.Name, pfx, r.External.Host), "routed")
			if r.SNAT == nil || *r.SNAT {
				add("snat", fmt.Sprintf("source %s -> %s on gw", from.addr, r.External.Router), "rewritten")
			}
			return true
		}
	}
	add("route", fmt.Sprintf("%s is on no allowlist entry and the router has no default route", to.addr), "drop")
	return false
}

func packet(fr firewall.Frame) string {
	proto := map[int]string{1: "icmp echo", 6: "tcp", 17: "udp", 58: "icmpv6 echo"}[fr.Proto]
	s := fmt.Sprintf("%s %s -> %s %s", fr.SrcMAC, fr.Src, fr.Dst, proto)
	if fr.Proto == 6 || fr.Proto == 17 {
		s += fmt.Sprintf(" dport %d", fr.DPort)
	}
	return s
}

// String renders the trace one stage a line.
func (t *Trace) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "trace %s -> %s: %s\n", t.From, t.To, t.Packet)
	for i, st := range t.Stages {
		fmt.Fprintf(&b, "%2d. %-13s %-9s %s\n", i+1, st.Stage, st.Result, st.Object)
		if st.Cloud != "" {
			fmt.Fprintf(&b, "    %-13s %-9s site %s's own cloud decides this: modelled with Neutron's semantics, its rules not seen\n", "", "", st.Cloud)
		}
	}
	fmt.Fprintf(&b, "verdict: %s\n", t.Verdict)
	return b.String()
}
