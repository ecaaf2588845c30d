package lab

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/bothnia/bothnia/check"
	"github.com/bothnia/bothnia/dataplane"
	"github.com/bothnia/bothnia/internal/kerneltest"
	"github.com/bothnia/bothnia/namespace"
	"github.com/bothnia/bothnia/plan"
	"github.com/bothnia/bothnia/spec"
)

// twoNodes is the smallest fabric with every part: one node per site, the
// router and Knox DHCP on knox-ctl, a VM on each node, a second network.
const twoNodes = `
fabric: {name: two, cidr: 10.101.0.0/16}
sites:
  epouta:
    cidr: 10.101.0.0/17
    pools: [10.101.0.4-10.101.127.255]
    dhcp: {address: 10.101.0.3, node: epouta-c1}
    nodes: [{name: epouta-c1, role: compute, underlay: 172.30.0.2}]
  knox:
    cidr: 10.101.128.0/17
    pools: [10.101.128.1-10.101.255.254]
    dhcp: {address: 10.101.128.0, node: knox-ctl}
    nodes: [{name: knox-ctl, role: controller, underlay: 172.30.0.1}]
link: {mode: vlan, device: em1}
router:
  name: r
  node: knox-ctl
  network: mgmt
  address: 10.101.0.1
  external: {cidr: 10.5.0.0/24, router: 10.5.0.2, host: 10.5.0.1}
  allow: [{name: api, prefix: 198.51.100.10}]
networks:
  - name: mgmt
    segment: 1203
    vms:
      - {name: k1, node: knox-ctl, ip: 10.101.128.10, mac: "fa:16:3e:80:00:0a"}
      - {name: e1, node: epouta-c1, ip: 10.101.0.10, mac: "fa:16:3e:00:00:0a"}
  - name: other
    segment: 1204
    vms:
      - {name: o1, node: knox-ctl, ip: 10.101.128.20, mac: "fa:16:3e:80:00:14"}
      - {name: o2, node: epouta-c1, ip: 10.101.0.20, mac: "fa:16:3e:00:00:14"}
lab:
  blocked: [{name: blocked, prefix: 203.0.113.99}]
`

func rootLinks(t *testing.T) []string {
	t.Helper()
	ls, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range ls {
		out = append(out, l.Attrs().Name)
	}
	slices.Sort(out)
	return out
}

// newLab brings a lab up under a fresh prefix and tears it down after the
// test, asserting the teardown leaves nothing behind.
func newLab(t *testing.T, s *spec.Spec, raw []byte, opts ...func(*Lab)) *Lab {
	t.Helper()
	kerneltest.RequireRoot(t)
	StateDir = t.TempDir()
	before := rootLinks(t)
	l, err := New(kerneltest.Prefix(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range opts {
		o(l)
	}
	foreignCloud(t, l, s)
	t.Cleanup(func() {
		if _, err := l.Down(); err != nil {
			t.Errorf("lab down: %v", err)
		}
		if left, _ := namespace.List(l.All()); len(left) != 0 {
			t.Errorf("lab down left namespaces %v", left)
		}
		if after := rootLinks(t); !slices.Equal(before, after) {
			t.Errorf("the root namespace's links changed: before %v after %v", before, after)
		}
		if _, err := os.Stat(filepath.Join(StateDir, l.Prefix)); !os.IsNotExist(err) {
			t.Errorf("lab down left its state directory: %v", err)
		}
		if left, _ := filepath.Glob(filepath.Join(NetnsEtc, l.All()+"*")); len(left) != 0 {
			t.Errorf("lab down left %v", left)
		}
	})
	rep, err := l.Up(s, raw)
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	if len(rep.Changes) == 0 || len(rep.Pending) != 0 {
		t.Fatalf("first lab up: %d changes, pending %v", len(rep.Changes), rep.Pending)
	}
	return l
}

// exampleSpec reads examples/knox-epouta.yaml, applies the edits to its
// YAML and parses it.
func exampleSpec(t *testing.T, edits ...func([]byte) []byte) (*spec.Spec, []byte) {
	t.Helper()
	raw, err := os.ReadFile("../examples/knox-epouta.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range edits {
		raw = e(raw)
	}
	s, err := spec.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return s, raw
}

func mustCheck(t *testing.T, l *Lab, s *spec.Spec) []check.Result {
	t.Helper()
	rs, err := l.Check(context.Background(), s, true)
	if err != nil {
		t.Fatal(err)
	}
	if n := check.Failed(rs); n != 0 {
		t.Fatalf("check: %d failures\n%s", n, check.Matrix(rs))
	}
	svc, err := l.CheckServices(s)
	if err != nil {
		t.Fatal(err)
	}
	if n := check.FailedServices(svc); n != 0 {
		t.Fatalf("service checks: %d failures\n%s", n, check.ServiceTable(svc))
	}
	if len(DHCPVMs(s)) > 0 && len(svc) == 0 {
		t.Fatal("the spec has DHCP VMs but no service was checked")
	}
	return rs
}

func upNoChange(t *testing.T, l *Lab, s *spec.Spec) {
	t.Helper()
	rep, err := l.Up(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Changes) != 0 {
		t.Fatalf("lab up on an up-to-date lab changed:\n%s", strings.Join(rep.Changes, "\n"))
	}
}

func routerNS(t *testing.T, l *Lab, s *spec.Spec) string {
	return l.SubPrefix(s.Router.Node) + "qrouter-" + plan.RouterID(s)
}

func handle(t *testing.T, ns string) *netlink.Handle {
	t.Helper()
	h, nsh, err := namespace.Netlink(ns)
	if err != nil {
		t.Fatal(err)
	}
	nsh.Close()
	t.Cleanup(h.Close)
	return h
}

func TestTwoNodeFabric(t *testing.T) {
	s, err := spec.Parse([]byte(twoNodes))
	if err != nil {
		t.Fatal(err)
	}
	l := newLab(t, s, []byte(twoNodes))
	rs := mustCheck(t, l, s)

	// Real packets, and the right ones: across the link, through SNAT.
	seen := map[string]check.Result{}
	for _, r := range rs {
		seen[r.Kind+" "+r.From+" "+r.To.Name] = r
	}
	for k, want := range map[string]string{
		"tcp k1 e1":  "10.101.128.10",
		"tcp e1 k1":  "10.101.0.10",
		"tcp e1 api": "10.5.0.2",
		"tcp o1 o2":  "10.101.128.20",
	} {
		if r := seen[k]; !r.Got || r.Source != want {
			t.Errorf("%s: got=%v source %q, want source %s", k, r.Got, r.Source, want)
		}
	}
	for _, k := range []string{"tcp e1 blocked", "icmp k1 blocked", "tcp o1 api", "icmp o1 k1", "tcp e1 o2"} {
		r, probed := seen[k]
		switch {
		case !probed:
			t.Errorf("%s: never probed, so nothing shows it blocked", k)
		case r.Got:
			t.Errorf("%s: reached, must be blocked", k)
		}
	}
	upNoChange(t, l, s)

	// A default route in the router opens it to everything behind mm:
	// check must see that, and the next apply must remove it.
	rns := routerNS(t, l, s)
	h := handle(t, rns)
	gw, err := h.LinkByName("gw")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: gw.Attrs().Index, Gw: net.ParseIP("10.5.0.1")}); err != nil {
		t.Fatal(err)
	}
	rs, err = l.Check(context.Background(), s, true)
	if err != nil {
		t.Fatal(err)
	}
	if n := check.Failed(rs); n == 0 {
		t.Fatal("check passed with a default route in the router")
	}
	rep, err := l.Up(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := rns + ": route del 0.0.0.0/0 via 10.5.0.1 dev gw"; !slices.Contains(rep.Changes, want) {
		t.Fatalf("lab up did not remove the default route; changes:\n%s", strings.Join(rep.Changes, "\n"))
	}
	mustCheck(t, l, s)
	upNoChange(t, l, s)
}

// The full example: every part of the seed, both sites, two projects.
// Then drift of the kinds the seed's operators met: a hand-set hub bridge,
// a lost flood entry, a deleted SNAT table; each is repaired alone.
func TestExampleLab(t *testing.T) {
	s, raw := exampleSpec(t)
	l := newLab(t, s, raw)
	mustCheck(t, l, s)
	upNoChange(t, l, s)

	// Commands run in a VM the iproute2 way resolve through the fabric's DNS.
	out, err := exec.Command("ip", "netns", "exec", l.VMNS("epouta-vm1"), "getent", "hosts", "knox-vm2").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "10.101.128.11 ") {
		t.Errorf("getent hosts knox-vm2 in epouta-vm1: %q, %v", out, err)
	}
	if got, err := l.Spec(); err != nil || got.Fabric.Name != s.Fabric.Name {
		t.Fatalf("the running lab's spec: %v, %v", got, err)
	}
	if lines, all, err := l.Status(s); err != nil || !all || len(lines) != 17+3 {
		t.Fatalf("status: all=%v err=%v\n%s", all, err, strings.Join(lines, "\n"))
	}

	ls, _ := LabSpec(s)
	mgmt := ls.Network("mgmt")
	br := plan.BridgeName(plan.NetworkID(ls, mgmt))
	c1 := handle(t, l.NodeNS("knox-c1"))
	b, err := c1.LinkByName(br)
	if err != nil {
		t.Fatal(err)
	}
	zero := uint32(0)
	if err := c1.LinkModify(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Index: b.Attrs().Index, Name: br}, AgeingTime: &zero}); err != nil {
		t.Fatal(err)
	}
	vx, err := c1.LinkByName(plan.VXLANName(1203))
	if err != nil {
		t.Fatal(err)
	}
	ctl := s.Node("knox-ctl").Underlay
	if err := c1.NeighDel(&netlink.Neigh{LinkIndex: vx.Attrs().Index, Family: 7, Flags: netlink.NTF_SELF,
		HardwareAddr: net.HardwareAddr{0, 0, 0, 0, 0, 0}, IP: net.ParseIP(ctl)}); err != nil {
		t.Fatal(err)
	}
	if err := namespace.Do(routerNS(t, l, s), func() error { return deleteNAT() }); err != nil {
		t.Fatal(err)
	}

	rep, err := l.Up(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	rns := routerNS(t, l, s)
	want := []string{
		l.NodeNS("knox-c1") + ": link set " + br + " type bridge ageing_time 30000",
		l.NodeNS("knox-c1") + ": fdb append 00:00:00:00:00:00 dev vxlan-1203 dst " + ctl,
		rns + ": nft add table ip " + dataplane.NATTable,
		rns + ": nft add chain ip " + dataplane.NATTable + " postrouting",
		rns + ": nft add rule ip " + dataplane.NATTable + " postrouting snat oif gw to 10.5.0.2",
	}
	slices.Sort(want)
	got := slices.Clone(rep.Changes)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("repair changed\n%s\nwant exactly\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	mustCheck(t, l, s)
}

// The same lab and check with the iptables renderer, and the other shape:
// both sites managed, bothnia on every node.
func TestExampleLabIPTables(t *testing.T) {
	s, raw := exampleSpec(t, func(raw []byte) []byte {
		raw = bytes.Replace(raw, []byte("mode: foreign"), []byte("mode: managed"), 1)
		return append(raw, []byte("\nfirewall: iptables\n")...)
	})
	l := newLab(t, s, raw)
	rs := mustCheck(t, l, s)
	denied := 0
	for _, r := range rs {
		if r.Kind == check.TCP && r.Port == 7001 && !r.Want && r.To.VM {
			denied++
		}
	}
	if denied == 0 {
		t.Fatal("check has no denied-port probes between VMs")
	}
	upNoChange(t, l, s)
}
