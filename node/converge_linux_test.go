package node_test

import (
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/bothnia/bothnia/dataplane"
	"github.com/bothnia/bothnia/internal/kerneltest"
	"github.com/bothnia/bothnia/namespace"
	"github.com/bothnia/bothnia/node"
	"github.com/bothnia/bothnia/plan"
	"github.com/bothnia/bothnia/spec"
)

const oneVM = `
fabric: {name: one, cidr: 10.101.0.0/16}
sites:
  epouta:
    cidr: 10.101.0.0/17
    pools: [10.101.0.4-10.101.127.255]
    nodes: [{name: epouta-c1, role: compute, underlay: 172.30.0.2}]
  knox:
    cidr: 10.101.128.0/17
    pools: [10.101.128.1-10.101.255.254]
    nodes: [{name: knox-c1, role: compute, underlay: 172.30.0.1}]
link: {mode: vxlan}
networks:
  - name: net1
    segment: 100
    vms:
      - {name: a, node: knox-c1, ip: 10.101.128.10, mac: "fa:16:3e:00:00:0a"}
`

// A tap joins its bridge only once the node's firewall holds its rules:
// when programming the firewall fails, the tap stays out (pending), and
// the next converge that programs it plugs the tap.
func TestTapWaitsForItsFirewall(t *testing.T) {
	kerneltest.RequireRoot(t)
	s, err := spec.Parse([]byte(oneVM))
	if err != nil {
		t.Fatal(err)
	}
	fab, err := node.Desired(s)
	if err != nil {
		t.Fatal(err)
	}
	var st *node.State
	for _, n := range fab.Nodes {
		if n.Name == "knox-c1" {
			st = n
		}
	}
	prefix := kerneltest.Prefix(t)
	host, vm := prefix+"-host", prefix+"-vm"
	for _, ns := range []string{host, vm} {
		if _, err := namespace.Create(ns); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = namespace.Delete(ns) })
	}
	tap := st.Plan.Ports[0].Name
	h, nsh, err := namespace.Netlink(host)
	if err != nil {
		t.Fatal(err)
	}
	defer nsh.Close()
	defer h.Close()
	vmNS, err := namespace.Open(vm)
	if err != nil {
		t.Fatal(err)
	}
	defer vmNS.Close()
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: tap}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(vmNS))}); err != nil {
		t.Fatal(err)
	}
	lo, _ := h.LinkByName("lo")
	addr, _ := netlink.ParseAddr("172.30.0.1/32")
	if err := h.AddrAdd(lo, addr); err != nil {
		t.Fatal(err)
	}
	_ = h.LinkSetUp(lo)

	inBridge := func() bool {
		l, err := h.LinkByName(tap)
		if err != nil {
			t.Fatal(err)
		}
		br, err := h.LinkByName(plan.BridgeName(plan.NetworkID(s, s.Network("net1"))))
		return err == nil && l.Attrs().MasterIndex == br.Attrs().Index
	}
	c := &node.Converger{Target: dataplane.Target{HostNS: host, Prefix: prefix}}
	defer c.Close()
	broken := *st
	broken.Renderer = "no-such-renderer"
	res, err := c.Converge(&broken)
	if err == nil || !strings.Contains(err.Error(), "firewall") {
		t.Fatalf("converge with a firewall that cannot be programmed: err = %v, want a firewall error", err)
	}
	if inBridge() {
		t.Fatalf("tap %s joined its bridge although the firewall holds no rules for it", tap)
	}
	if len(res.Pending) != 1 || !strings.Contains(res.Pending[0], "held") {
		t.Errorf("pending = %q, want the tap held", res.Pending)
	}
	if _, err := c.Resync(); err == nil || inBridge() {
		t.Fatalf("resync after a failed programming: err = %v, tap in bridge = %v; want an error and the tap still out", err, inBridge())
	}
	if _, err := c.Converge(st); err != nil {
		t.Fatal(err)
	}
	if !inBridge() {
		t.Fatalf("tap %s is not in its bridge after the firewall was programmed", tap)
	}
}
