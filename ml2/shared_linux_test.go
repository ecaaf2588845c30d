package ml2

import (
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/groups"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/rules"

	"github.com/bothnia/bothnia/internal/devcloud"
	"github.com/bothnia/bothnia/plan"
)

// in is the bed as seen from a subtest: its failures end that subtest.
func (b *bed) in(t *testing.T) *bed {
	c := *b
	c.t = t
	return &c
}

func run(ns string, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	return string(out), err
}

// pings reports whether ns reaches ip within tries pings of 1 s.
func pings(ns, ip string, tries int) bool {
	for i := 0; i < tries; i++ {
		if _, err := run(ns, "ping", "-c1", "-W1", "-q", ip); err == nil {
			return true
		}
	}
	return false
}

// forwardHits sums the packet counters of the rules in Neutron's FORWARD
// chain that name dev, and counts those rules.
func forwardHits(t *testing.T, ns, dev string) (rules int, packets uint64) {
	t.Helper()
	out, err := run(ns, "iptables", "-w", "-L", "neutron-linuxbri-FORWARD", "-v", "-x", "-n")
	if err != nil {
		t.Fatalf("iptables -L neutron-linuxbri-FORWARD: %v: %s", err, out)
	}
	for _, line := range strings.Split(out, "\n") {
		if !strings.Contains(line, dev+" ") && !strings.HasSuffix(line, dev) {
			continue
		}
		f := strings.Fields(line)
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			continue
		}
		rules++
		packets += n
	}
	return rules, packets
}

var zoneOfEntry = regexp.MustCompile(`zone=(\d+)`)

// zoned checks that web1's new connections are in bothnia's zone of the
// fabric's bridge, not in the one Neutron's CT rule gives its tap.
func zoned(t *testing.T, b *bed, when string) {
	t.Helper()
	node := b.l.NodeNS("knox-c1")
	zoneRules, _ := run(node, "nft", "list", "chain", "inet", "bothnia-fw", "prerouting")
	if _, err := run(node, "conntrack", "-F"); err != nil {
		t.Fatal(err)
	}
	if !pings(b.l.VMNS("web1"), "10.101.0.10", 5) {
		t.Errorf("%s: web1 does not reach ep-member", when)
	}
	out, _ := run(node, "conntrack", "-L", "-s", "10.101.128.30")
	zones := zoneOfEntry.FindAllStringSubmatch(out, -1)
	if len(zones) == 0 {
		t.Fatalf("%s: web1's connections are in no zone of their own:\n%s\nbothnia's zones:\n%s", when, out, zoneRules)
	}
	for _, z := range zones {
		if !strings.Contains(zoneRules, "ct zone set "+z[1]) {
			t.Errorf("%s: web1's connection is in zone %s, not bothnia's (Neutron's CT rule came first):\n%s\nbothnia's zones:\n%s", when, z[1], out, zoneRules)
			return
		}
	}
	t.Logf("%s: web1's connections in zone %s", when, zones[0][1])
}

// Issue 18, a Knox host shared with Neutron's own linuxbridge agent: the
// agent, unmodified, installs its chains for every tap named after a
// Neutron port, bothnia's included. A fabric VM there must be filtered by
// bothnia alone (its ePouta group members admitted, which Knox's Neutron
// does not know; a non-member refused) while a VM of Neutron's other
// network keeps Neutron's groups; and the fabric VM's connections must be
// in bothnia's conntrack zone even when bothnia's tables were made after
// Neutron's (an agent restart, a host reboot).
func sharedHost(t *testing.T, b *bed) {
	node := b.l.NodeNS("knox-c1")
	other, otherSub := b.neutronAgent()

	web, err := groups.Create(b.ctx, b.cloud.Network, groups.CreateOpts{Name: "web", ProjectID: devcloud.ProjectID}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rules.Create(b.ctx, b.cloud.Network, rules.CreateOpts{Direction: rules.DirIngress, EtherType: rules.EtherType4,
		Protocol: rules.ProtocolICMP, SecGroupID: web.ID, RemoteGroupID: web.ID, ProjectID: devcloud.ProjectID}).Extract(); err != nil {
		t.Fatal(err)
	}
	vm, _ := b.boot("web1", b.net, b.subnet, "10.101.128.30", "", 16, web.ID)
	ov, _ := b.boot("other9", other, otherSub, "10.202.0.30", "brq"+other[:11], 24)
	tap, otap := plan.TapName(vm.ID), plan.TapName(ov.ID)

	// Neutron's agent has put its chains on the fabric tap.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if n, _ := forwardHits(t, node, tap); n > 0 {
			break
		}
		if time.Now().After(deadline) {
			out, _ := run(node, "iptables-save")
			t.Fatalf("Neutron's agent installed no FORWARD rule for the fabric tap %s in 30 s:\n%s", tap, out)
		}
		time.Sleep(200 * time.Millisecond)
	}

	member, nonMember := b.l.VMNS("ep-member"), b.l.VMNS("ep-other")
	if !pings(member, "10.101.128.30", 10) {
		out, _ := run(node, "iptables", "-w", "-L", "-v", "-x", "-n")
		t.Errorf("ep-member (web on ePouta, unknown to Knox's Neutron) does not reach web1 on the shared host\n%s", out)
	}
	if pings(nonMember, "10.101.128.30", 3) {
		t.Error("ep-other (not in web) reaches web1: bothnia's groups do not judge it")
	}
	if !pings(b.l.VMNS("web1"), "10.101.0.10", 5) {
		t.Error("web1 does not reach ep-member")
	}
	if n, p := forwardHits(t, node, tap); p > 0 {
		t.Errorf("Neutron's %d FORWARD rules for the fabric tap %s matched %d packets; want none", n, tap, p)
	}

	// Neutron's own network on the same host keeps Neutron's groups: its
	// default group admits nothing from outside it, and lets the VM out.
	peer := b.l.VMNS("peer2")
	if pings(peer, "10.202.0.30", 3) {
		t.Error("peer2 reaches other9 though Neutron's default group admits only its members")
	}
	if !pings(b.l.VMNS("other9"), "10.202.0.1", 5) {
		t.Error("other9 (Neutron's network) does not reach peer2")
	}
	if n, p := forwardHits(t, node, otap); n == 0 || p == 0 {
		t.Errorf("Neutron's FORWARD rules for its own port's tap %s: %d rules, %d packets; want its chains to judge it", otap, n, p)
	}

	// Zones, with Neutron's raw table made after bothnia's (as here: its
	// agent started later) and before it (bothnia's tables made again,
	// as after a restart of its agent): of hooks of equal priority, the
	// one made last runs first.
	zoned(t, b, "Neutron's agent started after bothnia's")
	if out, err := run(node, "nft", "delete", "table", "inet", "bothnia-fw"); err != nil {
		t.Fatalf("nft delete table: %v: %s", err, out)
	}
	deadline = time.Now().Add(20 * time.Second)
	for {
		if out, err := run(node, "nft", "list", "chain", "inet", "bothnia-fw", "prerouting"); err == nil && strings.Contains(out, "ct zone set") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("bothnia's agent did not rebuild its table bothnia-fw in 20 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	zoned(t, b, "bothnia's tables made again")

	// What the unmodified agent still does to the fabric tap: ebtables
	// ARP and MAC chains from the same port record bothnia reads.
	eb, _ := run(node, "ebtables", "-t", "nat", "-L", "PREROUTING")
	t.Logf("Neutron's ebtables nat PREROUTING rules naming the fabric tap: %d\n%s", strings.Count(eb, tap), fmt.Sprint(eb))
}
