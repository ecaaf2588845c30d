package dataplane

import (
	"net"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/bothnia/bothnia/namespace"
	"github.com/bothnia/bothnia/plan"
)

// A router replica's links: a macvlan on a host device and a VXLAN tunnel
// from the host's underlay, both made from the host namespace straight
// into the router's (the tunnel's socket stays with the host), and legs
// kept down on a standby, brought up when it takes over, and taken down
// at once by SetDown.
func TestReplicaLinks(t *testing.T) {
	tg, h := setup(t)
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "ex0"
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "ex0p"}); err != nil {
		t.Fatal(err)
	}
	ul, _ := h.LinkByName("vmtap0")
	if err := h.AddrAdd(ul, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("172.30.0.11"), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"ex0", "ex0p", "vmtap0", "vmtap1"} {
		l, _ := h.LinkByName(n)
		_ = h.LinkSetUp(l)
	}
	replica := func(standby bool) *plan.Node {
		return &plan.Node{Name: "n1", Namespaces: []plan.Namespace{
			{Name: plan.HostNS, Role: plan.RoleHost},
			{Name: "qrouter-r", Role: plan.RoleRouter, Forwarding: true, Links: []plan.Link{
				{Name: "gw", Kind: plan.Macvlan, MAC: "fa:16:3e:00:00:02", MTU: 1500, Addrs: []string{"10.5.0.2/24"},
					Macvlan: &plan.MacvlanOpt{Parent: "ex0"}, Down: standby},
				{Name: "ha", Kind: plan.VXLAN, MTU: 1450, Addrs: []string{"169.254.192.1/24"},
					VXLAN: &plan.VXLANOpt{VNI: 16777000, Local: "172.30.0.11", Port: 4789, Dev: "vmtap0"},
					FDB:   []plan.FDB{{MAC: plan.FloodMAC, Dst: "172.30.0.12"}}},
			}},
		}}
	}
	if _, err := Apply(replica(true), tg); err != nil {
		t.Fatal(err)
	}
	rh, nsh, err := namespace.Netlink(tg.NS("qrouter-r"))
	if err != nil {
		t.Fatal(err)
	}
	nsh.Close()
	defer rh.Close()
	gw, err := rh.LinkByName("gw")
	if err != nil {
		t.Fatalf("gw is not in the router's namespace: %v", err)
	}
	if _, ok := gw.(*netlink.Macvlan); !ok || gw.Attrs().HardwareAddr.String() != "fa:16:3e:00:00:02" || gw.Attrs().Flags&net.FlagUp != 0 {
		t.Errorf("standby gw: %T mac %s flags %v; want a macvlan with the fixed MAC, down", gw, gw.Attrs().HardwareAddr, gw.Attrs().Flags)
	}
	ha, err := rh.LinkByName("ha")
	if err != nil {
		t.Fatalf("ha is not in the router's namespace: %v", err)
	}
	if v, ok := ha.(*netlink.Vxlan); !ok || v.VxlanId != 16777000 || ha.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("ha: %T %+v; want VXLAN 16777000, up", ha, ha)
	}
	if _, err := h.LinkByName("gw"); err == nil {
		t.Error("gw is in the host namespace too")
	}
	// Taking over: the legs come up, and nothing else changes.
	res, err := Apply(replica(false), tg)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Changes) != 1 || !strings.Contains(res.Changes[0], "link set gw up") {
		t.Errorf("takeover changed %v; want only gw up", res.Changes)
	}
	if res, err := Apply(replica(false), tg); err != nil || len(res.Changes) != 0 {
		t.Errorf("a second apply changed %v (%v); want nothing", res.Changes, err)
	}
	// Stepping down at once, outside an apply.
	if err := SetDown(tg, "qrouter-r", "gw", "missing"); err != nil {
		t.Fatal(err)
	}
	gw, _ = rh.LinkByName("gw")
	if gw.Attrs().Flags&net.FlagUp != 0 {
		t.Error("gw is up after SetDown")
	}
	res, err = Apply(replica(true), tg)
	if err != nil || len(res.Changes) != 0 {
		t.Errorf("the standby's apply after SetDown changed %v (%v); want nothing", res.Changes, err)
	}
}
