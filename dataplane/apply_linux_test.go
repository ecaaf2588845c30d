package dataplane

import (
	"errors"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/bothnia/bothnia/internal/kerneltest"
	"github.com/bothnia/bothnia/namespace"
	"github.com/bothnia/bothnia/plan"
)

// setup makes a namespace standing in for a host, with a veth pair that
// bothnia does not own (a hypervisor's tap), and removes all after the test.
func setup(t *testing.T) (Target, *netlink.Handle) {
	t.Helper()
	kerneltest.RequireRoot(t)
	p := kerneltest.Prefix(t)
	tg := Target{HostNS: p + "-host", Prefix: p + "-"}
	t.Cleanup(func() {
		left, _ := namespace.List(p + "-")
		for _, n := range left {
			_ = namespace.Delete(n)
		}
	})
	if _, err := namespace.Create(tg.HostNS); err != nil {
		t.Fatal(err)
	}
	h, nsh, err := namespace.Netlink(tg.HostNS)
	if err != nil {
		t.Fatal(err)
	}
	nsh.Close()
	t.Cleanup(h.Close)
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "vmtap0"
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "vmtap1"}); err != nil {
		t.Fatal(err)
	}
	return tg, h
}

func node() *plan.Node {
	return &plan.Node{
		Name: "n1",
		Namespaces: []plan.Namespace{
			{Name: plan.HostNS, Role: plan.RoleHost, Links: []plan.Link{
				{Name: "brqtest", Kind: plan.Bridge, MAC: "02:00:00:00:00:01", MTU: 1450, AgeingCentis: plan.DefaultAgeingCentis},
				{Name: "tapr", Kind: plan.Veth, MTU: 1450, Master: "brqtest", Peer: &plan.Peer{Namespace: "qrouter-x", Name: "qr-x"}},
			}},
			{Name: "qrouter-x", Role: plan.RoleRouter, Forwarding: true,
				Links: []plan.Link{{Name: "qr-x", Kind: plan.Veth, MAC: "fa:16:3e:00:00:01", MTU: 1450,
					Addrs: []string{"10.101.0.1/16"}, Peer: &plan.Peer{Namespace: plan.HostNS, Name: "tapr"}}},
				Routes: []plan.Route{{Dst: "198.51.100.0/24", Via: "10.101.0.254", Dev: "qr-x"}},
				SNAT:   []plan.SNAT{{OutIface: "qr-x", To: "10.101.0.1"}},
			},
		},
		Ports: []plan.Port{{Name: "vmtap0", Bridge: "brqtest", VM: "vm1", MTU: 1450}},
	}
}

func apply(t *testing.T, n *plan.Node, tg Target) *Result {
	t.Helper()
	res, err := Apply(n, tg)
	if err != nil {
		t.Fatalf("apply: %v\nchanges:\n%s", err, strings.Join(res.Changes, "\n"))
	}
	return res
}

func TestApplyIsIdempotentAndOwnsOnlyItsOwn(t *testing.T) {
	tg, h := setup(t)
	n := node()
	if res := apply(t, n, tg); len(res.Changes) == 0 {
		t.Fatal("first apply changed nothing")
	}
	if res := apply(t, n, tg); len(res.Changes) != 0 {
		t.Fatalf("second apply changed:\n%s", strings.Join(res.Changes, "\n"))
	}

	br, err := h.LinkByName("brqtest")
	if err != nil {
		t.Fatal(err)
	}
	if br.Attrs().HardwareAddr.String() != "02:00:00:00:00:01" || br.Attrs().Alias != Alias {
		t.Errorf("bridge mac %s alias %q", br.Attrs().HardwareAddr, br.Attrs().Alias)
	}
	if a := br.(*netlink.Bridge).AgeingTime; a == nil || *a != plan.DefaultAgeingCentis {
		t.Errorf("bridge ageing %v, want %d", a, plan.DefaultAgeingCentis)
	}
	tap, _ := h.LinkByName("vmtap0")
	if tap.Attrs().MasterIndex != br.Attrs().Index || tap.Attrs().Alias == Alias || tap.Attrs().MTU != 1450 {
		t.Errorf("the VM port is plugged, sized and not claimed: %+v", tap.Attrs())
	}
	rns := tg.NS("qrouter-x")
	rh, nsh, err := namespace.Netlink(rns)
	if err != nil {
		t.Fatal(err)
	}
	defer nsh.Close()
	defer rh.Close()
	routes, _ := rh.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: RouteProto}, netlink.RT_FILTER_PROTOCOL)
	if len(routes) != 1 || routes[0].Dst.String() != "198.51.100.0/24" {
		t.Errorf("router routes %v", routes)
	}
	if v, _ := namespace.Sysctl(rns, "net.ipv4.ip_forward"); v != "1" {
		t.Errorf("router forwarding %q", v)
	}

	// Someone else's route in the host namespace is left alone.
	vmtap1, _ := h.LinkByName("vmtap1")
	_ = h.LinkSetUp(vmtap1)
	_ = h.AddrAdd(vmtap1, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(192, 0, 2, 1), Mask: net.CIDRMask(24, 32)}})
	foreign := &netlink.Route{LinkIndex: vmtap1.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4(203, 0, 113, 0), Mask: net.CIDRMask(24, 32)}, Gw: net.IPv4(192, 0, 2, 2)}
	if err := h.RouteAdd(foreign); err != nil {
		t.Fatal(err)
	}
	if res := apply(t, n, tg); len(res.Changes) != 0 {
		t.Fatalf("a foreign route made apply change:\n%s", strings.Join(res.Changes, "\n"))
	}

	// Drop the VM from the plan: its tap leaves the bridge but survives.
	n.Ports = nil
	res := apply(t, n, tg)
	if want := tg.HostNS + ": link set vmtap0 nomaster"; !slices.Equal(res.Changes, []string{want}) {
		t.Fatalf("changes %v, want [%s]", res.Changes, want)
	}
	// Drop the router: its namespace goes, and the host end with it.
	n.Namespaces = n.Namespaces[:1]
	n.Namespaces[0].Links = n.Namespaces[0].Links[:1]
	apply(t, n, tg)
	if namespace.Exists(rns) {
		t.Error("the router namespace survived its removal from the plan")
	}
	if _, err := h.LinkByName("tapr"); err == nil {
		t.Error("tapr survived")
	}
	// An empty plan removes everything bothnia made, nothing else.
	apply(t, &plan.Node{Name: "n1", Namespaces: []plan.Namespace{{Name: plan.HostNS, Role: plan.RoleHost}}}, tg)
	links, _ := h.LinkList()
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"lo", "vmtap0", "vmtap1"}) {
		t.Errorf("after an empty plan the host has %v", names)
	}
	if rs, _ := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE); !slices.ContainsFunc(rs, func(r netlink.Route) bool { return r.Gw.Equal(foreign.Gw) }) {
		t.Error("the foreign route was removed")
	}
}

func TestApplyRefusesForeignLinkOfAnotherKind(t *testing.T) {
	tg, _ := setup(t)
	n := &plan.Node{Name: "n1", Namespaces: []plan.Namespace{{Name: plan.HostNS, Links: []plan.Link{
		{Name: "vmtap1", Kind: plan.Bridge, MTU: 1500},
	}}}}
	_, err := Apply(n, tg)
	if err == nil || !strings.Contains(err.Error(), "vmtap1: a veth named vmtap1 exists and belongs to something else") {
		t.Fatalf("want a refusal naming the link, got %v", err)
	}
}

// A link of the planned name and kind that bothnia did not make (on a
// Knox host: Neutron's brq bridge or em1.1203) is refused, not adopted,
// and left exactly as it was.
func TestApplyNeverAdoptsALinkItDidNotMake(t *testing.T) {
	tg, h := setup(t)
	neutron := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "brqneutron1", MTU: 1500}}
	if err := h.LinkAdd(neutron); err != nil {
		t.Fatal(err)
	}
	n := &plan.Node{Name: "n1", Namespaces: []plan.Namespace{{Name: plan.HostNS, Links: []plan.Link{
		{Name: "brqneutron1", Kind: plan.Bridge, MTU: 1450, MAC: "02:00:00:00:00:01", AgeingCentis: plan.DefaultAgeingCentis},
	}}}}
	_, err := Apply(n, tg)
	var foreign *ForeignLinkError
	if !errors.As(err, &foreign) || foreign.Name != "brqneutron1" || !strings.Contains(err.Error(), "bothnia never adopts a link it did not create") {
		t.Fatalf("want a ForeignLinkError naming brqneutron1, got %v", err)
	}
	l, err := h.LinkByName("brqneutron1")
	if err != nil {
		t.Fatal(err)
	}
	if a := l.Attrs(); a.Alias != "" || a.MTU != 1500 || a.HardwareAddr.String() == "02:00:00:00:00:01" {
		t.Fatalf("the foreign bridge was changed: alias %q mtu %d mac %s", a.Alias, a.MTU, a.HardwareAddr)
	}
}
