package guestlab

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/bothnia/bothnia/check"
	"github.com/bothnia/bothnia/internal/guest"
	"github.com/bothnia/bothnia/plan"
)

// What the example's VLAN mode is, on kernels that have 802.1Q: every
// probe check derives from the spec, from VMs in the guests, across the
// fibre (reachability within a network and across the sites, the other
// project's isolation, the security groups, the router's allowlist and
// SNAT).
func TestVLANCheck(t *testing.T) {
	f := fabric(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	rs, err := f.Check(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d probes in %s", len(rs), time.Since(start).Round(100*time.Millisecond))
	if n := check.Failed(rs); n > 0 {
		t.Fatalf("%d of %d probes failed:\n%s", n, len(rs), check.Matrix(rs))
	}
	crossSite := 0
	for _, r := range rs {
		if r.Got && r.To.VM && f.Spec.NodeSite(f.NodeOf[r.From]) != f.Spec.NodeSite(f.NodeOf[r.To.Name]) {
			crossSite++
		}
	}
	if crossSite == 0 {
		t.Fatal("no probe crossed between the sites")
	}
}

// ipLink is what "ip -d -j link" says of a link.
type ipLink struct {
	Name     string `json:"ifname"`
	Link     string `json:"link"`
	Master   string `json:"master"`
	Alias    string `json:"ifalias"`
	Address  string `json:"address"`
	LinkInfo struct {
		Kind string `json:"info_kind"`
		Data struct {
			ID       int    `json:"id"`
			Protocol string `json:"protocol"`
		} `json:"info_data"`
	} `json:"linkinfo"`
}

func links(t *testing.T, ctx context.Context, g *guest.Guest, ns string) map[string]ipLink {
	t.Helper()
	cmd := "ip -d -j link show"
	if ns != "" {
		cmd = "ip -n " + ns + " -d -j link show"
	}
	out, err := g.Sh(ctx, cmd)
	if err != nil {
		t.Fatal(err)
	}
	var ls []ipLink
	if err := json.Unmarshal([]byte(out), &ls); err != nil {
		t.Fatalf("%s: %s: %v", g.Name, cmd, err)
	}
	m := map[string]ipLink{}
	for _, l := range ls {
		m[l.Name] = l
	}
	return m
}

// Bothnia's own applier makes em1.<segment> on each node that carries
// the segment, an 802.1Q device on em1 in the network's bridge; nodes
// without the network have neither.
func TestVLANDevicesAreBothnias(t *testing.T) {
	f := fabric(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, st := range f.Desired.Nodes {
		have := links(t, ctx, f.Guest(st.Name), "")
		carried := map[int]bool{}
		for _, l := range st.Plan.Namespace(plan.HostNS).Links {
			if l.Kind != plan.VLAN {
				continue
			}
			carried[l.VLAN.ID] = true
			got, ok := have[l.Name]
			if !ok {
				t.Errorf("%s: no %s", st.Name, l.Name)
				continue
			}
			if got.LinkInfo.Kind != "vlan" || got.LinkInfo.Data.ID != l.VLAN.ID || got.Link != "em1" ||
				got.LinkInfo.Data.Protocol != "802.1Q" || got.Master != l.Master || got.Alias != "bothnia" {
				t.Errorf("%s: %s is %+v, want an 802.1Q device of VID %d on em1 in %s, owned by bothnia", st.Name, l.Name, got, l.VLAN.ID, l.Master)
			}
		}
		for _, seg := range []int{1203, 1204} {
			if _, ok := have[fmt.Sprintf("em1.%d", seg)]; ok != carried[seg] {
				t.Errorf("%s: em1.%d present %v, but the node carries the segment: %v", st.Name, seg, ok, carried[seg])
			}
		}
	}
	// The example's other project lives on two Knox compute nodes.
	for _, n := range []string{"epouta-ctl", "epouta-c1", "knox-ctl"} {
		if _, ok := links(t, ctx, f.Guest(n), "")["em1.1204"]; ok {
			t.Errorf("%s hosts nothing of project other, yet has em1.1204", n)
		}
	}
}

// captured is every frame a node's em1 carried so far.
func captured(t *testing.T, f *Fabric, node string) []guest.Frame {
	t.Helper()
	fr, err := guest.ReadPcap(f.Guest(node).PcapPath(0))
	if err != nil {
		t.Fatal(err)
	}
	return fr
}

// fabricMACs maps every MAC the fabric sends from (VMs, the router, the
// DHCP servers, the bridges) to its network's segment.
func fabricMACs(f *Fabric) map[string]int {
	s := f.Spec
	m := map[string]int{}
	for _, n := range s.Networks {
		for _, vm := range n.VMs {
			m[strings.ToLower(vm.MAC)] = n.Segment
		}
		for _, node := range s.NodeNames() {
			m[plan.BridgeMAC(s.NetworkID(n), node)] = n.Segment
		}
	}
	if infra := plan.InfraNetwork(s); infra != nil {
		m[plan.InfraMAC(plan.RouterPortID(s))] = infra.Segment
		for _, site := range s.SiteNames() {
			if d := s.Sites[site].DHCP; d != nil {
				for i := range d.Servers() {
					m[plan.InfraMAC(plan.DHCPServerPortID(s, site, i))] = infra.Segment
				}
			}
		}
	}
	return m
}

// On the fibre every frame of the fabric (a VM's, the router's, a DHCP
// server's, a bridge's) carries its network's VID (1203 for mgmt, 1204
// for the other project), only the nodes themselves (and the switch) send untagged, and no
// frame carries two tags. Counted from qemu's capture of each node's em1
// (other tests put frames of their own on VID 1205).
func TestVLANFramesOnTheFibreCarryTheirSegment(t *testing.T) {
	f := fabric(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Traffic of both networks between nodes, whatever ran before.
	for _, p := range [][2]string{{"knox-vm1", "10.101.0.10"}, {"sandbox-vm1", "10.101.128.21"}, {"epouta-vm2", "10.101.128.11"}} {
		if out, err := f.VMGuest(p[0]).Sh(ctx, fmt.Sprintf("ip netns exec %s ping -c 3 -i 0.2 -W 2 %s", VMNS(p[0]), p[1])); err != nil {
			t.Fatalf("%s to %s: %v\n%s", p[0], p[1], err, out)
		}
	}
	macs := fabricMACs(f)
	// Untagged: the nodes themselves, and the emulated switch.
	nodes, err := f.Cluster.SwitchMACs()
	if err != nil {
		t.Fatal(err)
	}
	for i := range f.Spec.NodeNames() {
		nodes[EM1(i)] = true
	}
	for _, n := range f.Spec.NodeNames() {
		frames := captured(t, f, n)
		tally := guest.Count(frames)
		t.Logf("%s em1: %d frames; by VID %v; double-tagged %d", n, len(frames), tally.ByVID, tally.Double)
		if tally.Double != 0 {
			t.Errorf("%s: %d frames with two tags on the fibre", n, tally.Double)
		}
		if tally.ByVID[1203] == 0 {
			t.Errorf("%s: no frame on VID 1203", n)
		}
		fabricFrames, strangers := 0, 0
		for _, fr := range frames {
			ids, _ := fr.VLANs()
			seg, ours := macs[fr.Src()]
			if len(ids) == 0 && !nodes[fr.Src()] {
				if strangers++; strangers == 1 {
					_, et := fr.VLANs()
					t.Errorf("%s: an untagged frame from %s to %s (type %#04x), not a node's em1 nor the switch; %s", n, fr.Src(), fr.Dst(), et, whoHas(ctx, f, fr.Src()))
				}
			}
			if !ours {
				continue
			}
			fabricFrames++
			if len(ids) != 1 || ids[0] != seg {
				t.Errorf("%s: a frame from the fabric's %s on the fibre with tags %v, want [%d]", n, fr.Src(), ids, seg)
				break
			}
		}
		if fabricFrames == 0 {
			t.Errorf("%s: no frame of the fabric's in the capture", n)
		}
	}
	if guest.Count(captured(t, f, "knox-c1")).ByVID[1204] == 0 {
		t.Error("knox-c1: no frame on VID 1204, though its sandbox VM pinged knox-c2's")
	}
}

// A VM that tags its own frames (an 802.1Q device inside the VM, on the
// other project's VID and its own) reaches nothing: the frames never
// leave the node, so no frame with two tags, nor one of its MAC on
// another VID, is on the fibre.
func TestVLANTaggedFramesFromAVMNeverLeave(t *testing.T) {
	f := fabric(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const vm = "sandbox-vm1"
	g := f.VMGuest(vm)
	ns := VMNS(vm)
	before := map[string]int{}
	for _, n := range f.Spec.NodeNames() {
		before[n] = len(captured(t, f, n))
	}
	// 10.101.0.10 is epouta-vm1 on mgmt (1203); 10.101.128.21 sandbox-vm2.
	out, err := g.Sh(ctx, fmt.Sprintf(`
ip -n %[1]s link add link eth0 name eth0.1203 type vlan id 1203
ip -n %[1]s link add link eth0 name eth0.1204 type vlan id 1204
ip -n %[1]s addr add 10.101.200.1/16 dev eth0.1203
ip -n %[1]s addr add 10.101.201.1/16 dev eth0.1204
ip -n %[1]s link set eth0.1203 up; ip -n %[1]s link set eth0.1204 up
r=0
ip netns exec %[1]s ping -c 3 -i 0.2 -W 1 -I eth0.1203 10.101.0.10 && r=1
ip netns exec %[1]s ping -c 3 -i 0.2 -W 1 -I eth0.1204 10.101.128.21 && r=1
ip -n %[1]s link del eth0.1203; ip -n %[1]s link del eth0.1204
exit $r`, ns))
	if err != nil {
		t.Fatalf("a tagged frame from %s got an answer, or the test could not run: %v\n%s", vm, err, out)
	}
	mac := strings.ToLower(vmByName(f, vm))
	for _, n := range f.Spec.NodeNames() {
		for _, fr := range captured(t, f, n)[before[n]:] {
			ids, _ := fr.VLANs()
			if len(ids) > 1 {
				t.Errorf("%s: a frame with tags %v on the fibre from %s", n, ids, fr.Src())
			}
			if fr.Src() == mac && (len(ids) != 1 || ids[0] != 1204) {
				t.Errorf("%s: a frame of %s on the fibre with tags %v", n, vm, ids)
			}
		}
	}
}

func vmByName(f *Fabric, name string) string {
	for _, n := range f.Spec.Networks {
		for _, vm := range n.VMs {
			if vm.Name == name {
				return vm.MAC
			}
		}
	}
	return ""
}

// The router (on knox-ctl) and the sites' DHCP servers serve across the
// tagged link: every VM of mgmt holds the lease the spec gives it from
// its own site's server, and the knox compute nodes' leases and routed
// traffic crossed the fibre on VID 1203.
func TestVLANRouterAndDHCPAcrossTheLink(t *testing.T) {
	f := fabric(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	infra := plan.InfraNetwork(f.Spec)
	for _, vm := range infra.VMs {
		got, err := f.Lease(ctx, vm.Name)
		if err != nil {
			t.Fatal(err)
		}
		for k, want := range check.LeaseWant(f.Spec, vm) {
			if got[k] != want {
				t.Errorf("%s: lease %s=%q, want %q", vm.Name, k, got[k], want)
			}
		}
	}
	// DHCP (UDP to 67 or 68) and the router's MAC on VID 1203, as knox-ctl's em1 saw them.
	routerMAC := plan.InfraMAC(plan.RouterPortID(f.Spec))
	dhcp, routed := 0, 0
	for _, fr := range captured(t, f, "knox-ctl") {
		ids, et := fr.VLANs()
		if len(ids) != 1 || ids[0] != 1203 {
			continue
		}
		if fr.Dst() == routerMAC {
			routed++
		}
		if p := fr.Payload(); et == guest.EtherIPv4 && len(p) >= 28 && p[9] == 17 {
			ihl := int(p[0]&0x0f) * 4
			if len(p) >= ihl+4 {
				if port := binary.BigEndian.Uint16(p[ihl+2:]); port == 67 || port == 68 {
					dhcp++
				}
			}
		}
	}
	t.Logf("knox-ctl's em1, VID 1203: %d DHCP frames, %d frames to the router", dhcp, routed)
	if dhcp == 0 || routed == 0 {
		t.Fatalf("knox-ctl's em1 carried %d DHCP frames and %d to the router on VID 1203, want some of each", dhcp, routed)
	}
}

// whoHas names the links with a MAC, in any guest or on the host's side
// of the fibre.
func whoHas(ctx context.Context, f *Fabric, mac string) string {
	var out []string
	for _, n := range f.Spec.NodeNames() {
		o, _ := f.Guest(n).Sh(ctx, "for ns in $(ip netns list | cut -d' ' -f1) ''; do ip ${ns:+-n $ns} -o link | grep -i "+mac+" | sed \"s|^|$ns |\"; done; true")
		if o = strings.TrimSpace(o); o != "" {
			out = append(out, n+": "+o)
		}
	}
	if o, _ := exec.Command("ip", "-n", f.Cluster.NS, "-o", "link").Output(); strings.Contains(string(o), mac) {
		out = append(out, "the host's side of the fibre")
	}
	if len(out) == 0 {
		return "no link has it"
	}
	return "it is " + strings.Join(out, "; ")
}
