package ml2

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/portsbinding"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"

	"github.com/bothnia/bothnia/internal/devcloud"
	"github.com/bothnia/bothnia/lab"
	"github.com/bothnia/bothnia/namespace"
	"github.com/bothnia/bothnia/openstack"
	"github.com/bothnia/bothnia/plan"
	"github.com/bothnia/bothnia/store"
)

// masterOf is the name of the bridge dev is a port of in ns, or "".
func masterOf(t *testing.T, ns, dev string) string {
	h, nsh, err := namespace.Netlink(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer nsh.Close()
	defer h.Close()
	l, err := h.LinkByName(dev)
	if err != nil || l.Attrs().MasterIndex == 0 {
		return ""
	}
	m, err := h.LinkByIndex(l.Attrs().MasterIndex)
	if err != nil {
		return ""
	}
	return m.Attrs().Name
}

// waitFor polls cond every 100 ms for up to d.
func waitFor(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); ; time.Sleep(100 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// rebind is docs/openstack.md's step for a running VM's port: a change
// of binding:profile makes ML2 bind the port again on the same host, by
// whichever driver serves that host now; it returns the port once ACTIVE.
func (b *bed) rebind(p *openstack.Port, step string) *openstack.Port {
	b.t.Helper()
	var out openstack.Port
	if err := ports.Update(b.ctx, b.cloud.Network, p.ID, portsbinding.UpdateOptsExt{UpdateOptsBuilder: ports.UpdateOpts{},
		Profile: map[string]any{"bothnia-switch": step}}).ExtractInto(&out); err != nil {
		b.t.Fatal(err)
	}
	if !waitFor(30*time.Second, func() bool { return b.status(p.ID) == "ACTIVE" }) {
		b.t.Fatalf("%s: %s 30 s after its rebinding\n%s", p.Name, b.status(p.ID), b.mentions(p.ID))
	}
	return &out
}

// bothniaOn lists what of bothnia's a host namespace holds: links it
// made (ifalias "bothnia"), nftables tables, iptables chains.
func bothniaOn(t *testing.T, ns string) []string {
	var left []string
	for _, c := range [][]string{{"ip", "-o", "link", "show"}, {"nft", "list", "tables"}, {"iptables-save"}, {"ip6tables-save"}} {
		out, err := run(ns, c...)
		if err != nil {
			t.Fatalf("%v: %v: %s", c, err, out)
		}
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, "bothnia") {
				left = append(left, line)
			}
		}
	}
	return left
}

// Issue 18: docs/openstack.md's "Back" and "Over", carried out on
// knox-c2 against the real server and agent: a VM of bothnia's keeps
// working under Neutron's agent and one of Neutron's under bothnia's, each
// rebound in place; a VM booted after each switch goes ACTIVE on the new
// owner's bridge; Back leaves nothing of bothnia's.
func switchOverAndBack(t *testing.T, b *bed) {
	const host = "knox-c2"
	ns := b.l.NodeNS(host)
	neutronBridge := "brq" + b.net[:11]
	reaches := func(vm string) bool { return pings(b.l.VMNS(vm), "10.101.0.11", 10) }

	b1, _ := b.bootOn(host, "b1", b.net, b.subnet, "10.101.128.40", "", 16)
	if b1.VIFType != "tap" || !reaches("b1") {
		t.Fatalf("b1 on bothnia's %s: bound %q, reaches ep-other %v", host, b1.VIFType, reaches("b1"))
	}
	bothniaBridge := masterOf(t, ns, plan.TapName(b1.ID))

	// Back: the agent stopped, what it made removed, Neutron's cabling
	// (em1.1203) and its agent with the fabric's physical network.
	if err := b.l.StopAgent(host); err != nil {
		t.Fatal(err)
	}
	if !waitFor(20*time.Second, func() bool {
		resp, err := b.cli.Get(b.ctx, store.StatusKey(host))
		return err == nil && len(resp.Kvs) == 0
	}) {
		t.Fatalf("%s's status is still in the store 20 s after its agent stopped", host)
	}
	out, err := exec.Command("ip", "netns", "exec", ns, lab.Exe, "remove", "--ns-prefix", b.l.SubPrefix(host)).CombinedOutput()
	if err != nil {
		t.Fatalf("bothnia remove: %v\n%s", err, out)
	}
	t.Logf("bothnia remove on %s:\n%s", host, out)
	if left := bothniaOn(t, ns); len(left) > 0 {
		t.Errorf("left of bothnia's on %s after remove:\n%s", host, strings.Join(left, "\n"))
	}
	if again, err := exec.Command("ip", "netns", "exec", ns, lab.Exe, "remove", "--ns-prefix", b.l.SubPrefix(host), "-o", "json").CombinedOutput(); err != nil || !strings.Contains(string(again), `"changes": []`) {
		t.Errorf("a second remove: %v\n%s", err, again)
	}
	if err := b.l.NeutronCabling(host); err != nil {
		t.Fatal(err)
	}
	if err := b.d.StartHost(b.ctx, devcloud.Host{Cloud: "knox", Name: host, NS: ns}); err != nil {
		t.Fatal(err)
	}
	// b1's tap is in no bridge now: Neutron's agent plugs no compute
	// port's tap (Nova's os-vif does, for vif_type bridge). Rebound, its
	// port is linuxbridge's; Nova's hard reboot of the VM then plugs the
	// tap into Neutron's bridge, as the test does here.
	if p := b.rebind(b1, "back"); p.VIFType != "bridge" {
		t.Errorf("b1 rebound on Neutron's %s as %q, want bridge (linuxbridge's)", host, p.VIFType)
	}
	if out, err := exec.Command("ip", "-n", ns, "link", "set", plan.TapName(b1.ID), "master", neutronBridge).CombinedOutput(); err != nil {
		t.Fatalf("plug b1's tap into %s: %v: %s", neutronBridge, err, out)
	}
	if !reaches("b1") {
		t.Error("b1 does not reach ep-other on Neutron's bridge")
	}
	n1, _ := b.bootOn(host, "n1", b.net, b.subnet, "10.101.128.41", neutronBridge, 16)
	if n1.VIFType != "bridge" || !reaches("n1") {
		t.Fatalf("n1 booted under Neutron: bound %q, reaches ep-other %v", n1.VIFType, reaches("n1"))
	}

	// Over: Neutron's agent keeps only its other networks (physnet2),
	// its bridge and em1.1203 go, bothnia's agent starts.
	if err := b.d.StopHost(ns); err != nil {
		t.Fatal(err)
	}
	cut := time.Now() // the running VMs' taps leave Neutron's bridge with it
	if out, err := exec.Command("ip", "-n", ns, "link", "del", neutronBridge).CombinedOutput(); err != nil {
		t.Fatalf("ip link del %s: %v: %s", neutronBridge, err, out)
	}
	if err := b.l.RemoveNeutronCabling(host); err != nil {
		t.Fatal(err)
	}
	if err := b.l.StartAgent(host); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*openstack.Port{n1, b1} {
		if !waitFor(30*time.Second, func() bool { return masterOf(t, ns, plan.TapName(p.ID)) == bothniaBridge }) {
			t.Fatalf("bothnia's agent did not plug %s's tap into %s in 30 s", p.Name, bothniaBridge)
		}
	}
	outage := time.Since(cut)
	for _, c := range [][]string{{"-n", ns, "link", "add", "em2", "type", "veth", "peer", "name", "em2p"},
		{"-n", ns, "link", "set", "em2", "up"}, {"-n", ns, "link", "set", "em2p", "up"}} {
		if out, err := exec.Command("ip", c...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", c, err, out)
		}
	}
	if err := b.d.StartHost(b.ctx, devcloud.Host{Cloud: "knox", Name: host, NS: ns, Mappings: "physnet2:em2"}); err != nil {
		t.Fatal(err)
	}
	t.Logf("over: Neutron's bridge deleted -> the running VMs' taps in bothnia's: %s", outage.Round(time.Millisecond))
	if !reaches("n1") {
		t.Error("n1, booted under Neutron, does not reach ep-other on bothnia's bridge")
	}
	for _, p := range []*openstack.Port{n1, b1} {
		if q := b.rebind(p, "over"); q.VIFType != "tap" {
			t.Errorf("%s rebound on bothnia's %s as %q, want tap (bothnia's)", p.Name, host, q.VIFType)
		}
	}
	f2, _ := b.bootOn(host, "f2", b.net, b.subnet, "10.101.128.42", "", 16)
	if f2.VIFType != "tap" || masterOf(t, ns, plan.TapName(f2.ID)) != bothniaBridge || !reaches("f2") {
		t.Errorf("f2 booted after the switch: bound %q, in %q, reaches ep-other %v", f2.VIFType, masterOf(t, ns, plan.TapName(f2.ID)), reaches("f2"))
	}
	if !reaches("b1") {
		t.Error("b1 does not reach ep-other after switching over and back")
	}
}
