package firewall_test

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"go.yaml.in/yaml/v3"
	"golang.org/x/sys/unix"

	"github.com/bothnia/bothnia/firewall"
	"github.com/bothnia/bothnia/lab"
	"github.com/bothnia/bothnia/namespace"
	"github.com/bothnia/bothnia/plan"
	"github.com/bothnia/bothnia/spec"
)

// The differential test: random security groups, port assignments and
// allowed pairs; many random and edge-case frames sent from VM taps into a
// node programmed by each renderer; the kernel's verdict (did the frame
// reach the receiver's eth0?) must equal the reference evaluator's for
// every frame. Rounds run from fixed seeds plus testdata/differential,
// the seeds of past failures; a mismatch prints its seed and the frame.
//
// BOTHNIA_DIFF_SEEDS=a,b,c runs other seeds (to hunt, then commit a
// failing one to the corpus).

// diffVM is one VM of the fixed topology.
type diffVM struct {
	name, node, net, ip, mac string
	secured                  bool
}

var diffVMs = []diffVM{
	{"v1", "knox-c1", "net1", "10.101.128.10", "fa:16:3e:10:00:01", true},
	{"v2", "knox-c1", "net1", "10.101.128.11", "fa:16:3e:10:00:02", true},
	{"v3", "knox-c1", "net1", "10.101.128.12", "fa:16:3e:10:00:03", true},
	{"u1", "knox-c1", "net1", "10.101.128.13", "fa:16:3e:10:00:04", false},
	{"r1", "epouta-c1", "net1", "10.101.0.20", "fa:16:3e:10:00:05", true},
	{"w1", "knox-c1", "net2", "10.101.128.10", "fa:16:3e:20:00:01", true},
	{"w2", "knox-c1", "net2", "10.101.128.30", "fa:16:3e:20:00:02", true},
	// Drawn only by the second source (see diffRun.x), so that the seeds
	// of past failures still make their frames.
	{"u2", "knox-c1", "net2", "10.101.128.31", "fa:16:3e:20:00:03", false},
}

// oldVMs are the VMs the first source draws among.
var oldVMs = diffVMs[:len(diffVMs)-1]

// The sites' DHCP servers in the rounds' fabrics (not in the lab: the
// firewall only needs their addresses), and the addresses the nodes have
// on net1's bridge.
const (
	diffDHCPKnox   = "10.101.128.1"
	diffDHCPEpouta = "10.101.0.3"
)

var diffNodeAddr = map[string]string{"knox-c1": "10.101.128.250", "epouta-c1": "10.101.0.250"}

const diffGroups = 3

// diffSpec is a random round: the fixed topology with random groups.
func diffSpec(r, x *rand.Rand, renderer string) (*spec.Spec, error) {
	s := &spec.Spec{
		Fabric:   spec.Fabric{Name: "diff", CIDR: "10.101.0.0/16"},
		Firewall: renderer,
		Sites: map[string]*spec.Site{
			"epouta": {CIDR: "10.101.0.0/17", Pools: []string{"10.101.0.4-10.101.127.255"}, Nodes: []*spec.Node{{Name: "epouta-c1", Role: "compute", Underlay: "172.30.0.2"}},
				DHCP: &spec.DHCP{Address: diffDHCPEpouta, Node: "epouta-c1"}},
			"knox": {CIDR: "10.101.128.0/17", Pools: []string{"10.101.128.5-10.101.255.254"}, Nodes: []*spec.Node{{Name: "knox-c1", Role: "compute", Underlay: "172.30.0.1"}},
				DHCP: &spec.DHCP{Address: diffDHCPKnox, Node: "knox-c1"}},
		},
		Link: spec.Link{Mode: "vxlan"},
	}
	for g := 0; g < diffGroups; g++ {
		sg := &spec.SecurityGroup{Name: fmt.Sprintf("g%d", g), NoDefaultEgress: r.IntN(2) == 0}
		for i := r.IntN(6); i > 0; i-- {
			sg.Rules = append(sg.Rules, randomRule(r))
		}
		s.SecurityGroups = append(s.SecurityGroups, sg)
	}
	nets := map[string]*spec.Network{}
	for _, n := range []struct {
		name string
		seg  int
	}{{"net1", 100}, {"net2", 200}} {
		nets[n.name] = &spec.Network{Name: n.name, Segment: n.seg}
		s.Networks = append(s.Networks, nets[n.name])
	}
	for i, v := range diffVMs {
		vm := &spec.VM{Name: v.name, Node: v.node, IP: v.ip, MAC: v.mac}
		if !v.secured {
			f := false
			vm.PortSecurity = &f
		} else {
			for g := 0; g < diffGroups; g++ {
				if r.IntN(3) == 0 {
					vm.SecurityGroups = append(vm.SecurityGroups, fmt.Sprintf("g%d", g))
				}
			}
			vm.AllowedAddressPairs = append(vm.AllowedAddressPairs, randomPairs(r, i)...)
			// Now and then a pair of everything (issue 16: ipset's
			// hash:net refuses a /0).
			if x.IntN(10) == 0 {
				vm.AllowedAddressPairs = append(vm.AllowedAddressPairs, spec.AddressPair{IP: pick(x, "0.0.0.0/0", "::/0"), Shared: true})
			}
		}
		nets[v.net].VMs = append(nets[v.net].VMs, vm)
	}
	// Through YAML, so defaults (Neutron's default egress rules, the
	// default group) are applied as for any spec.
	b, err := yaml.Marshal(s)
	if err != nil {
		return nil, err
	}
	return spec.Parse(b)
}

func pick[T any](r *rand.Rand, xs ...T) T { return xs[r.IntN(len(xs))] }

func randomRule(r *rand.Rand) *spec.SGRule {
	v6 := r.IntN(4) == 0
	rule := &spec.SGRule{Direction: pick(r, "ingress", "egress"), Ethertype: "IPv4"}
	if v6 {
		rule.Ethertype = "IPv6"
	}
	icmp := "icmp"
	if v6 {
		icmp = pick(r, "icmp", "ipv6-icmp", "icmpv6", "58")
	}
	rule.Protocol = pick(r, "", "tcp", "udp", "tcp", "udp", icmp, icmp, "any", "0", "esp", "gre", "6", "17")
	switch rule.Protocol {
	case "tcp", "udp", "6", "17":
		if r.IntN(3) > 0 {
			lo := 1000 + r.IntN(10)
			hi := lo + pick(r, 0, 0, 1, 5)
			rule.PortRange = strconv.Itoa(lo)
			if hi != lo {
				rule.PortRange += "-" + strconv.Itoa(hi)
			}
		}
	case "icmp", "ipv6-icmp", "icmpv6", "58":
		if r.IntN(2) == 0 {
			t := pick(r, 8, 0, 3)
			if v6 {
				t = pick(r, 128, 129, 134, 133, 1)
			}
			rule.ICMPType = &t
			if r.IntN(3) == 0 {
				c := pick(r, 0, 1)
				rule.ICMPCode = &c
			}
		}
	}
	switch r.IntN(4) {
	case 0:
		if v6 {
			rule.RemoteIPPrefix = pick(r, "fe80::/10", "fd00::/8", "::/0", "2001:db8::/64")
		} else {
			rule.RemoteIPPrefix = pick(r, "10.101.0.0/16", "10.101.128.0/17", "10.101.128.11/32", "192.168.7.0/24", "0.0.0.0/0", "10.101.0.0/17")
		}
	case 1:
		rule.RemoteGroup = fmt.Sprintf("g%d", r.IntN(diffGroups))
	}
	return rule
}

// randomPairs gives VM i some allowed address pairs: IPv4 hosts and
// prefixes, IPv6 prefixes, sometimes with a MAC of their own.
func randomPairs(r *rand.Rand, i int) []spec.AddressPair {
	var out []spec.AddressPair
	for n := r.IntN(3); n > 0; n-- {
		p := spec.AddressPair{IP: pick(r, fmt.Sprintf("192.168.7.%d", 10+i), "192.168.7.0/28", fmt.Sprintf("2001:db8::%x/128", 16+i), "2001:db8:1::/64")}
		if r.IntN(3) == 0 {
			p.MAC = fmt.Sprintf("fa:16:3e:aa:%02x:%02x", i, r.IntN(256))
		}
		out = append(out, p)
	}
	return out
}

// diffRun holds one renderer's lab.
type diffRun struct {
	t        *testing.T
	l        *lab.Lab
	renderer string
	notSYN   int // TCP segments sent without a SYN and no connection
	seq      int
	// generic holds the address pairs a portless protocol (ESP) already
	// used this round: conntrack keys such flows by addresses alone, so a
	// second frame would be part of the first's connection.
	generic map[string]bool
	// x draws what frames were added after the corpus of past failures
	// was made (neighbour discovery targets and options, traffic to the
	// node, routed frames, u2): a second source, so r's draws, and the
	// frames the corpus seeds make, stay as they were.
	x    *rand.Rand
	spec *spec.Spec // the round's
	// Frames of the kinds added for issue 16, counted so that a run
	// that sent none of one fails.
	sentND, sentToNode, sentRouted int
}

func newDiffRun(t *testing.T, renderer string, first *spec.Spec) *diffRun {
	// The lab runs no DHCP servers here: the rounds' fabrics name them
	// for the firewall only.
	labSpec := *first
	labSpec.Sites = map[string]*spec.Site{}
	for name, site := range first.Sites {
		st := *site
		st.DHCP = nil
		labSpec.Sites[name] = &st
	}
	l := upLab(t, &labSpec)
	// The nodes forward, as a real network node does, and have an
	// address on net1's bridge: a frame a VM sends to the bridge's MAC
	// for another VM's address would be routed, and the firewall must
	// drop it; one for the node's own address must meet the sender's
	// egress checks.
	for node, addr := range diffNodeAddr {
		ns := l.NodeNS(node)
		br := plan.BridgeName(plan.NetworkID(first, first.Network("net1")))
		for _, args := range [][]string{{"addr", "add", addr + "/16", "dev", br}} {
			if out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput(); err != nil {
				t.Fatalf("ip -n %s %v: %v: %s", ns, args, err, out)
			}
		}
		for _, k := range []string{"net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter"} {
			v := "0"
			if k == "net.ipv4.ip_forward" {
				v = "1"
			}
			if err := namespace.SetSysctl(ns, k, v); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Multicast snooping would steer MLD reports to router ports only;
	// here every frame should meet the firewall, then flood.
	for _, node := range []string{"knox-c1", "epouta-c1"} {
		for _, n := range first.Networks {
			br := plan.BridgeName(plan.NetworkID(first, n))
			_ = exec.Command("ip", "-n", l.NodeNS(node), "link", "set", "dev", br, "type", "bridge", "mcast_snooping", "0").Run()
		}
	}
	return &diffRun{t: t, l: l, renderer: renderer}
}

// round programs one random spec and checks a batch of frames.
func (d *diffRun) round(seed uint64, frames int) {
	t := d.t
	r := rand.New(rand.NewPCG(seed, 0xb07))
	d.x = rand.New(rand.NewPCG(seed, 0x16))
	s, err := diffSpec(r, d.x, d.renderer)
	if err != nil {
		t.Fatalf("seed %d: %v", seed, err)
	}
	d.spec = s
	f, err := firewall.Compile(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, node := range []string{"knox-c1", "epouta-c1"} {
		if _, err := firewall.Program(d.renderer, d.l.NodeNS(node), f, node); err != nil {
			t.Fatalf("seed %d: program %s: %v", seed, node, err)
		}
		// Each round starts without connections, so a round's verdicts
		// do not depend on the rounds before it.
		h, nsh, err := namespace.Netlink(d.l.NodeNS(node))
		if err != nil {
			t.Fatal(err)
		}
		for _, fam := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
			if _, err := h.ConntrackDeleteFilters(netlink.ConntrackTable, fam, everyFlow{}); err != nil {
				t.Fatalf("flush conntrack %v: %v", fam, err)
			}
		}
		h.Close()
		nsh.Close()
	}
	d.generic = map[string]bool{}
	var names []string
	for _, v := range diffVMs {
		names = append(names, v.name)
	}
	c := newCapture(t, d.l.VMNS, names, findMarkers)
	nc := newNodeCapture(t, d.l.NodeNS, []string{"knox-c1", "epouta-c1"})
	type sent struct {
		w        *wireFrame
		from, to string
		want     firewall.Verdict
	}
	var all []sent
	for i := 0; i < frames; i++ {
		ws, from, to := d.randomFrames(r, f, seed)
		for k, w := range ws {
			if k == 1 { // a reply: established where each node let the first through
				atFrom, atTo := confirmed(all[len(all)-1].want, vmNode(to) == vmNode(from))
				w.Established, w.DestEstablished = atTo, atFrom
			}
			v := f.Decide(w.Frame)
			if w.NotSYN {
				d.notSYN++
			}
			bs, err := w.bytes()
			if err != nil {
				t.Fatalf("seed %d: encode %+v: %v", seed, w.Frame, err)
			}
			sendFrames(t, d.l.VMNS(from), bs)
			all = append(all, sent{w, from, to, v})
			if k == 0 && len(ws) > 1 {
				time.Sleep(5 * time.Millisecond) // let the first commit its conntrack entry
			}
			from, to = to, from
		}
	}
	time.Sleep(300 * time.Millisecond)
	for _, x := range all {
		got := c.saw(x.to, x.w.key())
		if strings.HasPrefix(x.to, "node:") {
			got = nc.saw(x.to, x.w.key())
		}
		if got != x.want.Allowed {
			bs, _ := x.w.bytes()
			t.Errorf("%s seed %d: %s -> %s: kernel delivered=%v, evaluator=%v\n  frame: %s\n  bytes: %x\n  evaluator:\n%s",
				d.renderer, seed, x.from, x.to, got, x.want.Allowed, describe(x.w), bs, indent(x.want.String()))
		}
	}
}

// confirmed says on which nodes conntrack committed a frame's flow, from
// where the evaluator let it go: the sender's node commits it once it has
// passed the sender's egress and left the node (at once, if the receiver
// is elsewhere), the receiver's node once it is delivered.
func confirmed(v firewall.Verdict, sameNode bool) (atSender, atReceiver bool) {
	egressPassed := true
	for _, st := range v.Stages {
		if (st.Name == "anti-spoofing" || st.Name == "egress") && st.Result == "drop" {
			egressPassed = false
		}
	}
	if sameNode {
		return v.Allowed, v.Allowed
	}
	return egressPassed, v.Allowed
}

func vmNode(name string) string {
	for _, v := range diffVMs {
		if v.name == name {
			return v.node
		}
	}
	return ""
}

// everyFlow matches every conntrack entry.
type everyFlow struct{}

func (everyFlow) MatchConntrackFlow(*netlink.ConntrackFlow) bool { return true }

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n    ")
}

func describe(w *wireFrame) string {
	s := fmt.Sprintf("%s > %s", w.SrcMAC, w.DstMAC)
	for _, t := range w.Tags {
		s += fmt.Sprintf(" tag %#04x vid %d", t.TPID, t.VID)
	}
	switch w.EtherType {
	case firewall.EtherARP:
		return s + fmt.Sprintf(" arp who-has %s tell %s (sha %s)", w.ARPTpa, w.ARPSpa, w.ARPSha)
	case firewall.EtherIPv4, firewall.EtherIPv6:
		s += fmt.Sprintf(" %s > %s proto %d %d/%d", w.Src, w.Dst, w.Proto, w.SPort, w.DPort)
	}
	if w.TCPFlags != "" {
		s += " flags " + w.TCPFlags
	}
	if w.Fragment {
		s += " fragmented"
	}
	if w.Established {
		s += " (reply)"
	}
	return s + " marker " + w.Marker
}

// randomFrames makes one frame (or a frame and its reply) between two VMs
// of one network.
func (d *diffRun) randomFrames(r *rand.Rand, f *firewall.Fabric, seed uint64) ([]*wireFrame, string, string) {
	from := oldVMs[r.IntN(len(oldVMs))]
	var peers []diffVM
	for _, v := range oldVMs {
		if v.net == from.net && v.name != from.name {
			peers = append(peers, v)
		}
	}
	to := peers[r.IntN(len(peers))]
	// u2, net2's unsecured port, sends now and then, and receives where
	// w2 would have.
	if d.x.IntN(12) == 0 && from.net == "net2" {
		from = diffVMs[len(diffVMs)-1]
	} else if to.name == "w2" && d.x.IntN(3) == 0 {
		to = diffVMs[len(diffVMs)-1]
	}
	d.seq++
	w := &wireFrame{DstMAC: to.mac, Marker: fmt.Sprintf("BN%04x%06x", seed&0xffff, d.seq), ID: uint16(d.seq)}
	w.From, w.To = f.Port(from.name), f.Port(to.name)
	w.SrcMAC = from.mac
	src4, dst4 := netip.MustParseAddr(from.ip), netip.MustParseAddr(to.ip)
	ll := func(mac string) netip.Addr { return plan.LinkLocal(mac) }
	ports := []int{999, 1000, 1001, 1004, 1005, 1006, 1009, 1010, 1014, 1015, 1016, 68, 67, 5353}
	w.SPort, w.DPort = 20000+d.seq%40000, pick(r, ports...)
	// The source: own, a pair's, another VM's, or nothing anyone owns.
	src4 = pick(r, src4, src4, src4, netip.MustParseAddr(fmt.Sprintf("192.168.7.%d", 10+r.IntN(8))), netip.MustParseAddr("192.168.7.3"), netip.MustParseAddr("10.101.128.11"), netip.MustParseAddr("10.101.200.1"))
	src6 := pick(r, ll(from.mac), ll(from.mac), netip.MustParseAddr(fmt.Sprintf("2001:db8::%x", 16+r.IntN(8))), netip.MustParseAddr("2001:db8:1::5"), netip.MustParseAddr("fd00::1"), ll(to.mac))
	if r.IntN(8) == 0 {
		// Another VM's MAC only from a secured port: from an unsecured one
		// it would pass and move that MAC in the bridge's FDB.
		forged := []string{"fa:16:3e:99:99:99", fmt.Sprintf("fa:16:3e:aa:%02x:%02x", r.IntN(7), r.IntN(256))}
		if from.secured {
			forged = append(forged, to.mac)
		}
		w.SrcMAC = pick(r, forged...)
	}
	if p := w.From; p != nil && r.IntN(5) == 0 && len(p.Pairs) > 1 {
		pr := p.Pairs[1+r.IntN(len(p.Pairs)-1)]
		w.SrcMAC = pr.MAC
		if pr.Prefix.Addr().Is4() {
			src4 = pr.Prefix.Addr()
		} else {
			src6 = pr.Prefix.Addr()
		}
	}
	reply := false
	switch kind := r.IntN(20); {
	case kind < 5: // IPv4 tcp/udp/icmp/other
		w.EtherType, w.Src, w.Dst = firewall.EtherIPv4, src4, dst4
		w.Proto = pick(r, 6, 17, 17, 1, 50)
		switch w.Proto {
		case 6:
			w.TCPFlags = "S"
			// Every seventh TCP segment is an ACK with no connection, a
			// stream conntrack would pick up (decided by the sequence, not
			// a draw, so the seeds of past failures still make their
			// frames).
			if d.seq%7 == 3 {
				w.TCPFlags, w.NotSYN = "A", true
			}
		case 1:
			w.SPort, w.DPort = pick(r, 8, 8, 3, 0), pick(r, 0, 0, 1)
		}
		reply = w.Proto == 17 || (w.Proto == 1 && w.SPort == 8)
	case kind < 7: // IPv4 edge cases: DHCP, invalid, fragments
		w.EtherType, w.Src, w.Dst, w.Proto = firewall.EtherIPv4, src4, dst4, 17
		switch r.IntN(5) {
		case 0:
			w.Src, w.Dst, w.SPort, w.DPort, w.DstMAC = netip.IPv4Unspecified(), netip.MustParseAddr("255.255.255.255"), 68, 67, "ff:ff:ff:ff:ff:ff"
		case 1:
			w.Src, w.SPort, w.DPort = netip.IPv4Unspecified(), 68, 67
		case 2:
			w.SPort, w.DPort = 67, 68
		case 3:
			w.Proto, w.TCPFlags, w.Invalid = 6, "SF", true
		case 4:
			w.Fragment = true
		}
		switch d.x.IntN(5) {
		case 0: // to a DHCP client port from another port (issue 16)
			w.Src, w.Dst, w.Proto, w.DPort = src4, dst4, 17, 68
			w.Invalid, w.TCPFlags, w.Fragment = false, "", false
			w.SPort = pick(d.x, 1067, 20000+d.seq%40000)
		case 1: // a server's offer, from its address (an unsecured port may send it)
			if !from.secured {
				w.Src, w.Dst, w.Proto, w.SPort, w.DPort = netip.MustParseAddr(pick(d.x, diffDHCPKnox, diffDHCPEpouta)), dst4, 17, 67, 68
				w.Invalid, w.TCPFlags, w.Fragment = false, "", false
			}
		}
	case kind < 9: // ARP
		w.EtherType, w.DstMAC = firewall.EtherARP, "ff:ff:ff:ff:ff:ff"
		w.ARPSha = pick(r, w.SrcMAC, w.SrcMAC, w.SrcMAC, to.mac, "fa:16:3e:99:99:98")
		w.ARPSpa = pick(r, src4, netip.MustParseAddr(from.ip), netip.MustParseAddr(to.ip))
		w.ARPTpa = netip.AddrFrom4([4]byte{10, 101, 250, byte(d.seq)})
		w.Marker = "arp " + w.ARPSha + " " + w.ARPSpa.String() + " " + w.ARPTpa.String()
	case kind < 16: // IPv6
		w.EtherType, w.Src, w.Dst = firewall.EtherIPv6, src6, ll(to.mac)
		if r.IntN(4) == 0 {
			w.Dst, w.DstMAC = netip.MustParseAddr("ff02::1"), "33:33:00:00:00:01"
		}
		switch r.IntN(6) {
		case 0, 1:
			w.Proto, w.SPort, w.DPort = 58, pick(r, 128, 128, 129, 134, 134, 134, 133, 135, 136, 130, 131, 143, 1), 0
			if r.IntN(2) == 0 {
				w.Src = ll(w.SrcMAC) // the fixed ICMPv6 rules are about well-formed sources
			}
			reply = w.SPort == 128
			if d.x.IntN(10) == 0 {
				w.SPort, reply = 137, false // a redirect, which conntrack marks INVALID
			}
			d.randomND(w, from, to)
		case 2:
			w.Proto, w.SPort, w.DPort = 17, pick(r, 547, 546, 20000+d.seq%40000), pick(r, 546, 547, 1000, 1005)
			reply = true
		case 3:
			w.Proto, w.TCPFlags = 6, "S"
			if d.seq%7 == 3 { // as for IPv4: an ACK with no connection
				w.TCPFlags, w.NotSYN = "A", true
			}
		case 4: // from ::, as DAD and MLD do, or not
			w.Src, w.Proto, w.SPort, w.DPort = netip.IPv6Unspecified(), 58, pick(r, 135, 131, 143, 128, 136), 0
			if r.IntN(3) == 0 {
				w.Dst, w.DstMAC = ll(to.mac), to.mac
			} else {
				w.Dst, w.DstMAC = netip.MustParseAddr("ff02::1"), "33:33:00:00:00:01"
			}
			d.randomND(w, from, to)
		case 5:
			w.Proto = 50
		}
	default: // tagged frames
		w.EtherType, w.Src, w.Dst, w.Proto = firewall.EtherIPv4, src4, dst4, 17
		if r.IntN(3) == 0 {
			w.EtherType, w.Src, w.Dst = firewall.EtherIPv6, src6, ll(to.mac)
		}
		switch r.IntN(4) {
		case 0:
			w.Tags = []firewall.Tag{{TPID: firewall.TPIDCTag, VID: 0}}
		case 1:
			w.Tags = []firewall.Tag{{TPID: firewall.TPIDCTag, VID: pick(r, 1203, 100, 200, 1)}}
		case 2:
			w.Tags = []firewall.Tag{{TPID: firewall.TPIDSTag, VID: pick(r, 0, 1203)}}
		case 3:
			w.Tags = []firewall.Tag{{TPID: firewall.TPIDCTag, VID: 0}, {TPID: firewall.TPIDCTag, VID: 100}}
		}
	}
	if w.Proto == 50 {
		a, b := w.Src.String(), w.Dst.String()
		if b < a {
			a, b = b, a
		}
		if k := from.net + " " + a + " " + b; d.generic[k] {
			w.Proto = 17
		} else {
			d.generic[k] = true
		}
	}
	if !reply || r.IntN(2) == 0 {
		if node := d.toNode(w, f, from); node != "" {
			return []*wireFrame{w}, from.name, "node:" + node
		}
		return []*wireFrame{w}, from.name, to.name
	}
	// The reply: addresses, ports and MACs swapped; an ICMP echo answered.
	rw := *w
	rw.From, rw.To = w.To, w.From
	rw.SrcMAC, rw.DstMAC = to.mac, from.mac
	if w.Dst.IsMulticast() {
		return []*wireFrame{w}, from.name, to.name
	}
	rw.Src, rw.Dst = w.Dst, w.Src
	rw.SPort, rw.DPort = w.DPort, w.SPort
	// An echo reply keeps the request's code: conntrack's ICMP tuple has it.
	switch {
	case w.Proto == 1:
		rw.SPort, rw.DPort = 0, w.DPort
	case w.Proto == 58:
		rw.SPort, rw.DPort = 129, w.DPort
	}
	d.seq++
	rw.Marker = fmt.Sprintf("BN%04x%06x", seed&0xffff, d.seq)
	return []*wireFrame{w, &rw}, from.name, to.name
}

// randomND makes an ICMPv6 neighbour solicitation or advertisement a
// well-formed message (or, sometimes, one too short for a target) with a
// target and options drawn from what poisoning would use: another VM's
// address, a foreign MAC in the link-layer option, a nonce, two options.
func (d *diffRun) randomND(w *wireFrame, from, to diffVM) {
	// A bridge with neighbour suppression on its uplink answers and
	// keeps neighbour discovery for known addresses on the node, so only
	// a message too short to be one crosses to another node.
	if !w.isND() || from.node != to.node {
		return
	}
	d.sentND++
	x := d.x
	ll := plan.LinkLocal
	targets := []netip.Addr{ll(from.mac), ll(from.mac), ll(to.mac), netip.MustParseAddr("2001:db8::99"), {}}
	if p := w.From; p != nil {
		for _, pr := range p.Pairs {
			if pr.Prefix.Addr().Is6() {
				targets = append(targets, pr.Prefix.Addr())
			}
		}
	}
	own := firewall.NDOpt{Type: 1, MAC: w.SrcMAC}
	if w.SPort == 136 {
		own.Type = 2
	}
	foreign := own
	foreign.MAC = to.mac
	wrong := own
	wrong.Type = 3 - own.Type
	nonce := firewall.NDOpt{Type: 14, MAC: "0a:0b:0c:0d:0e:0f"}
	opts := pick(x, nil, []firewall.NDOpt{own}, []firewall.NDOpt{own}, []firewall.NDOpt{foreign}, []firewall.NDOpt{nonce},
		[]firewall.NDOpt{wrong}, []firewall.NDOpt{own, nonce})
	w.nd(pick(x, targets...), opts...)
}

// toNode now and then turns a frame into one for the node itself (to the
// bridge's MAC and an address of the node: its address on net1's bridge,
// or the bridge's link-local address) or into one the node would route
// (to the bridge's MAC and another VM's address), and returns the node.
func (d *diffRun) toNode(w *wireFrame, f *firewall.Fabric, from diffVM) string {
	// The node's IP stack refuses a source of 0.0.0.0 for any but the
	// broadcast address (a martian), whatever the firewall says.
	if len(w.Tags) > 0 || w.isND() || (w.EtherType != firewall.EtherIPv4 && w.EtherType != firewall.EtherIPv6) ||
		w.Src == netip.IPv4Unspecified() {
		return ""
	}
	id := plan.NetworkID(d.spec, d.spec.Network(from.net))
	mac := plan.BridgeMAC(id, from.node)
	routed := w.EtherType == firewall.EtherIPv4 && from.net == "net1" && !w.Dst.IsMulticast() && w.Dst != netip.MustParseAddr("255.255.255.255")
	switch n := d.x.IntN(10); {
	case n == 0 && routed:
		// Routed: the destination stays another VM's address.
		w.DstMAC, w.Routed = mac, true
		d.sentRouted++
		return ""
	case n <= 2:
		w.DstMAC, w.To, w.ToNode = mac, nil, true
		if w.EtherType == firewall.EtherIPv4 && from.net == "net1" {
			w.Dst = netip.MustParseAddr(diffNodeAddr[from.node])
		} else {
			w.EtherType, w.Dst = firewall.EtherIPv6, d.bridgeLL(from.node, plan.BridgeName(id))
			if w.Src.Is4() {
				w.Src = plan.LinkLocal(w.SrcMAC)
			}
			if w.Proto == 1 {
				w.Proto = 58
			}
		}
		d.sentToNode++
		return from.node
	}
	return ""
}

// bridgeLL is a bridge's own link-local address, as the kernel gave it.
func (d *diffRun) bridgeLL(node, bridge string) netip.Addr {
	h, nsh, err := namespace.Netlink(d.l.NodeNS(node))
	if err != nil {
		d.t.Fatal(err)
	}
	defer nsh.Close()
	defer h.Close()
	l, err := h.LinkByName(bridge)
	if err != nil {
		d.t.Fatal(err)
	}
	// Until duplicate address detection is done the address is
	// tentative, and the node takes nothing sent to it.
	for i := 0; i < 50; i++ {
		addrs, err := h.AddrList(l, netlink.FAMILY_V6)
		if err != nil {
			d.t.Fatal(err)
		}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.IsLinkLocalUnicast() && a.Flags&unix.IFA_F_TENTATIVE == 0 {
				return ip
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	d.t.Fatalf("bridge %s on %s has no usable link-local address", bridge, node)
	return netip.Addr{}
}

// diffSeeds are the rounds every run checks: fixed seeds and the corpus.
func diffSeeds(t *testing.T) []uint64 {
	if env := os.Getenv("BOTHNIA_DIFF_SEEDS"); env != "" {
		var out []uint64
		for _, f := range strings.Split(env, ",") {
			n, err := strconv.ParseUint(strings.TrimSpace(f), 10, 64)
			if err != nil {
				t.Fatalf("BOTHNIA_DIFF_SEEDS: %v", err)
			}
			out = append(out, n)
		}
		return out
	}
	out := []uint64{1, 2, 3, 4, 5, 6}
	fh, err := os.Open("testdata/differential/seeds")
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		if line = strings.TrimSpace(line); line == "" {
			continue
		}
		n, err := strconv.ParseUint(line, 10, 64)
		if err != nil {
			t.Fatalf("testdata/differential/seeds: %q: %v", line, err)
		}
		out = append(out, n)
	}
	return out
}

func runDifferential(t *testing.T, renderer string) {
	seeds := diffSeeds(t)
	r := rand.New(rand.NewPCG(seeds[0], 0xb07))
	first, err := diffSpec(r, rand.New(rand.NewPCG(seeds[0], 0x16)), renderer)
	if err != nil {
		t.Fatal(err)
	}
	d := newDiffRun(t, renderer, first)
	for _, seed := range seeds {
		d.round(seed, 150)
	}
	if d.notSYN == 0 {
		t.Error("no TCP segment without a SYN was sent: the rule that a new connection begins with one went untested")
	}
	if d.sentND == 0 || d.sentToNode == 0 || d.sentRouted == 0 {
		t.Errorf("frames of issue 16's kinds sent: %d neighbour discovery, %d to the node, %d routed; each must be sent", d.sentND, d.sentToNode, d.sentRouted)
	}
}

func TestDifferentialNFTables(t *testing.T) { runDifferential(t, "nftables") }
func TestDifferentialIPTables(t *testing.T) { runDifferential(t, "iptables") }
