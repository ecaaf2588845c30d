package guestlab

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/bothnia/bothnia/internal/guest"
	"github.com/bothnia/bothnia/internal/packetsock"
	"github.com/bothnia/bothnia/node"
	"github.com/bothnia/bothnia/plan"
)

// reflect puts a frame on the fibre as a switch reflecting a flooded
// frame back would: broadcast, tagged vid, from src, of an ethertype
// nobody handles. Every node's em1 gets it.
func reflect(t *testing.T, f *Fabric, vid int, src string) {
	t.Helper()
	mac, err := net.ParseMAC(src)
	if err != nil {
		t.Fatal(err)
	}
	fr := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	fr = append(fr, mac...)
	fr = append(fr, 0x81, 0x00, byte(vid>>8), byte(vid), 0x88, 0xb5)
	fr = append(fr, make([]byte, 46)...)
	if err := packetsock.Send(f.Cluster.NS, Fibre, fr); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
}

type fdbEntry struct {
	MAC   string   `json:"mac"`
	Dev   string   `json:"ifname"`
	Flags []string `json:"flags"`
	State string   `json:"state"`
}

// portOf is the bridge port a MAC is forwarded to, by the bridge's own
// table (not the uplink devices' own entries).
func portOf(t *testing.T, ctx context.Context, g *guest.Guest, br, mac string) string {
	t.Helper()
	out, err := g.Sh(ctx, "bridge -j fdb show br "+br)
	if err != nil {
		t.Fatal(err)
	}
	var es []fdbEntry
	if err := json.Unmarshal([]byte(out), &es); err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if e.MAC == mac && !strings.Contains(strings.Join(e.Flags, ","), "self") {
			return e.Dev
		}
	}
	return ""
}

func bridgeMAC(t *testing.T, ctx context.Context, g *guest.Guest, br string) string {
	t.Helper()
	return links(t, ctx, g, "")[br].Address
}

// The seed's bridge bug, as the seed saw it on Knox: a Neutron-made
// bridge (no MAC of its own, learning, normal ageing) learns the router's
// MAC on the uplink from a frame the fibre sends back, and the VMs lose
// the router; the bridge's MAC is its lowest port's. The seed's fix was
// hub mode (ageing 0). bothnia's bridges keep learning and ageing, have
// a fixed MAC, and learn nothing from the uplink, where every other
// node's member is a static entry: the same frame moves nothing.
func TestSeedBridgeLearningBug(t *testing.T) {
	f := fabric(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ctl, c1 := f.Guest("knox-ctl"), f.Guest("knox-c1")
	const routerMAC, vmMAC, vid = "fa:16:3e:5e:ed:01", "fa:16:3e:5e:ed:02", 1205

	t.Run("as Neutron wires it", func(t *testing.T) {
		// The linuxbridge agent's wiring, on an unused VID: brq with
		// em1.1205, the router's tap on knox-ctl, a VM on knox-c1.
		// Quiet ends (no IPv6, permanent neighbours): after the ping
		// the router sends nothing by itself, so what the bridge learnt
		// from the fibre stays as it is.
		wire := func(g *guest.Guest, ns, tap, mac, addr, peer, peerMAC string) {
			if _, err := g.Sh(ctx, fmt.Sprintf(`set -e
ip link add link em1 name em1.%[1]d type vlan id %[1]d
ip link add brqseed type bridge
ip link set em1.%[1]d master brqseed
ip netns add %[2]s
ip link add %[3]s type veth peer name eth0 netns %[2]s
ip -n %[2]s link set eth0 address %[4]s
ip netns exec %[2]s sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
ip -n %[2]s addr add %[5]s dev eth0
ip -n %[2]s link set eth0 up
ip -n %[2]s neigh replace %[6]s lladdr %[7]s dev eth0 nud permanent
ip link set %[3]s master brqseed
for l in em1.%[1]d %[3]s brqseed; do ip link set $l up; done`, vid, ns, tap, mac, addr, peer, peerMAC)); err != nil {
				t.Fatal(err)
			}
		}
		wire(ctl, "seedr", "tapseedr", routerMAC, "10.99.0.1/24", "10.99.0.2", vmMAC)
		wire(c1, "seedvm", "tapseedvm", vmMAC, "10.99.0.2/24", "10.99.0.1", routerMAC)
		t.Cleanup(func() {
			for _, g := range []*guest.Guest{ctl, c1} {
				_, _ = g.Sh(context.Background(), fmt.Sprintf("ip link del brqseed; ip link del em1.%d; ip link del tapseedr; ip link del tapseedvm; ip link del seedlow; ip netns del seedr; ip netns del seedvm; true", vid))
			}
		})
		ping := "ip netns exec seedvm ping -c 2 -i 0.3 -W 1 10.99.0.1"
		if out, err := c1.Sh(ctx, ping); err != nil {
			t.Fatalf("the VM does not reach the router before anything is reflected: %v\n%s", err, out)
		}
		if got := portOf(t, ctx, ctl, "brqseed", routerMAC); got != "tapseedr" {
			t.Fatalf("knox-ctl learned the router on %q before the reflection, want tapseedr", got)
		}
		reflect(t, f, vid, routerMAC)
		if got := portOf(t, ctx, ctl, "brqseed", routerMAC); got != fmt.Sprintf("em1.%d", vid) {
			t.Fatalf("the reflected frame left the router on %q; the seed's bug is not reproduced", got)
		}
		if out, err := c1.Sh(ctx, ping); err == nil {
			t.Fatalf("the VM still reaches the router learned on the uplink:\n%s", out)
		}
		// The bridge's MAC is its lowest port's, and follows a lower one.
		low := "02:00:00:00:00:01"
		before := bridgeMAC(t, ctx, ctl, "brqseed")
		if _, err := ctl.Sh(ctx, "ip link add seedlow address "+low+" type veth peer name seedlow1 && ip link set seedlow master brqseed"); err != nil {
			t.Fatal(err)
		}
		if after := bridgeMAC(t, ctx, ctl, "brqseed"); after != low || before == low {
			t.Fatalf("brqseed's MAC went from %s to %s when a port of %s joined, want that port's", before, after, low)
		}
		// The seed's workaround: a hub, which floods every frame.
		if _, err := ctl.Sh(ctx, "ip link set brqseed type bridge ageing_time 0"); err != nil {
			t.Fatal(err)
		}
		reflect(t, f, vid, routerMAC)
		if out, err := c1.Sh(ctx, ping); err != nil {
			t.Fatalf("hub mode (ageing 0) did not restore the router: %v\n%s", err, out)
		}
	})

	t.Run("as bothnia wires it", func(t *testing.T) {
		mgmt := plan.InfraNetwork(f.Spec)
		netID := f.Spec.NetworkID(mgmt)
		br := plan.BridgeName(netID)
		rmac := plan.InfraMAC(plan.RouterPortID(f.Spec))
		rtap := ""
		for _, l := range nodeState(t, f, "knox-ctl").Plan.Namespace(plan.HostNS).Links {
			if l.Peer != nil && strings.HasPrefix(l.Peer.Namespace, "qrouter-") {
				rtap = l.Name
			}
		}
		vm1MAC := strings.ToLower(vmByName(f, "knox-vm1"))
		vm1Tap := ""
		for _, p := range nodeState(t, f, "knox-c1").Plan.Ports {
			if p.VM == "knox-vm1" {
				vm1Tap = p.Name
			}
		}
		toRouter := fmt.Sprintf("ip netns exec %s ping -c 2 -i 0.3 -W 1 %s", VMNS("knox-vm1"), f.Spec.Router.Address)
		if out, err := c1.Sh(ctx, toRouter); err != nil {
			t.Fatalf("knox-vm1 does not reach the router: %v\n%s", err, out)
		}
		// The router's and knox-vm1's MACs come back over the fibre.
		reflect(t, f, mgmt.Segment, rmac)
		reflect(t, f, mgmt.Segment, vm1MAC)
		if got := portOf(t, ctx, ctl, br, rmac); got != rtap {
			t.Errorf("knox-ctl's %s forwards the router's MAC to %q after the reflection, want its tap %s", br, got, rtap)
		}
		if got := portOf(t, ctx, c1, br, vm1MAC); got != vm1Tap {
			t.Errorf("knox-c1's %s forwards knox-vm1's MAC to %q after the reflection, want its tap %s", br, got, vm1Tap)
		}
		if out, err := c1.Sh(ctx, toRouter); err != nil {
			t.Errorf("knox-vm1 lost the router after the reflection: %v\n%s", err, out)
		}
		if out, err := f.VMGuest("epouta-vm1").Sh(ctx, fmt.Sprintf("ip netns exec %s ping -c 2 -i 0.3 -W 1 10.101.128.10", VMNS("epouta-vm1"))); err != nil {
			t.Errorf("epouta-vm1 lost knox-vm1 after the reflection: %v\n%s", err, out)
		}
		// Not a hub: the bridge keeps its ageing, and its MAC is the
		// planned one whatever joins it.
		want := plan.BridgeMAC(netID, "knox-c1")
		if _, err := c1.Sh(ctx, "ip link add seedlow address 02:00:00:00:00:01 type veth peer name seedlow1 && ip link set seedlow master "+br); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _, _ = c1.Sh(context.Background(), "ip link del seedlow") })
		if got := bridgeMAC(t, ctx, c1, br); got != want {
			t.Errorf("knox-c1's %s has MAC %s with a lower port in it, want the planned %s", br, got, want)
		}
		out, err := c1.Sh(ctx, "cat /sys/class/net/"+br+"/bridge/ageing_time")
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(out); got != fmt.Sprint(plan.DefaultAgeingCentis) {
			t.Errorf("knox-c1's %s ageing_time is %s, want %d (learning on, not a hub)", br, got, plan.DefaultAgeingCentis)
		}
	})
}

func nodeState(t *testing.T, f *Fabric, name string) *node.State {
	t.Helper()
	st, err := f.Desired.Node(name)
	if err != nil {
		t.Fatal(err)
	}
	return st
}
