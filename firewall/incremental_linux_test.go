package firewall_test

import (
	"fmt"
	"math/bits"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"

	"github.com/bothnia/bothnia/check"
	"github.com/bothnia/bothnia/firewall"
	"github.com/bothnia/bothnia/namespace"
	"github.com/bothnia/bothnia/spec"
)

// A port added or removed at run time touches only its own chains and map
// entries and its group's member set, in one transaction; drift is found by
// a read-back and repaired.
// nftNode is the fixture's knox-c1 with a new nftables programmer over
// it, and the fabric it was programmed from.
func nftNode(t *testing.T) (*fixture, *firewall.NFT, *firewall.Fabric, string) {
	t.Helper()
	fx := setup(t, "nftables")
	f, err := firewall.Compile(fx.s)
	if err != nil {
		t.Fatal(err)
	}
	ns := fx.l.NodeNS("knox-c1")
	x, err := firewall.NewNFT(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(x.Close)
	return fx, x, f, ns
}

func TestNFTIncrementalAndDrift(t *testing.T) {
	fx, x, f, ns := nftNode(t)
	if ch, err := x.Program(f, "knox-c1"); err != nil || len(ch) != 0 {
		t.Fatalf("a new programmer over an up-to-date node changed %v (err %v)", ch, err)
	}

	p := firewall.Port{Name: "tapincrement-0", ID: 4242, VM: "g", Node: "knox-c1", Network: "net1",
		MAC: "fa:16:3e:00:00:42", IP: netip.MustParseAddr("10.101.128.42"), Groups: []string{"web"}}
	p.Pairs = []firewall.Pair{{Prefix: netip.MustParsePrefix("10.101.128.42/32"), MAC: p.MAC}}
	added, err := x.AddPort(f, &p)
	if err != nil {
		t.Fatal(err)
	}
	own := []string{"tapincrement-0", fmt.Sprintf("0x%08x", 4242<<16), fmt.Sprintf("0x%08x", 4242), "10.101.128.42/32"}
	for _, c := range added {
		if !strings.HasPrefix(c, "add element ") {
			t.Errorf("adding a port must write set elements only, got: %s", c)
		}
		if !slices.ContainsFunc(own, func(o string) bool { return strings.Contains(c, o) }) {
			t.Errorf("adding a port changed something not its own: %s", c)
		}
	}
	// ports, known-ports, in-marks, one out-bit set per bit of the ID,
	// spoof-v4, port-macs, 2 spoof-v6 (link-local, ::), eg-web, in-web,
	// rg-web-v4.
	want := 10 + bits.OnesCount16(p.ID)
	if len(added) != want {
		t.Fatalf("add port: %d changes, want %d:\n%s", len(added), want, strings.Join(added, "\n"))
	}
	removed, err := x.RemovePort(f, &p)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != want {
		t.Fatalf("remove port: %d changes, want %d:\n%s", len(removed), want, strings.Join(removed, "\n"))
	}

	// A rule added to a group rewrites that group's chain and nothing else.
	g := fx.s.SecurityGroup("web")
	g.Rules = append(g.Rules, &spec.SGRule{Direction: "ingress", Ethertype: "IPv4", Protocol: "tcp", PortRange: "443"})
	f2, err := firewall.Compile(fx.s)
	if err != nil {
		t.Fatal(err)
	}
	changed, err := x.Program(f2, "knox-c1")
	if err != nil {
		t.Fatal(err)
	}
	if len(changed) != 1 || !strings.HasPrefix(changed[0], "replace chain inet bothnia-fw sg-web-in ") {
		t.Fatalf("a new rule changed %v, want only chain sg-web-in", changed)
	}

	// Someone flushes the ingress group rules: a read-back sees it, the
	// repair rewrites that chain alone.
	chain := "ingress-groups"
	err = namespace.Do(ns, func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		c.FlushChain(&nftables.Chain{Name: chain, Table: &nftables.Table{Name: firewall.FWTable, Family: nftables.TableFamilyINet}})
		return c.Flush()
	})
	if err != nil {
		t.Fatal(err)
	}
	drift, err := x.Resync()
	if err != nil {
		t.Fatal(err)
	}
	if len(drift) != 1 || !strings.Contains(drift[0], chain) {
		t.Fatalf("drift %v, want exactly chain %s", drift, chain)
	}
	if drift, err := x.Resync(); err != nil || len(drift) != 0 {
		t.Fatalf("after repair: drift %v, err %v", drift, err)
	}
	// The repaired chain filters again: e (web, other site) reaches a on
	// 9000, c (not in web) does not.
	resp, err := check.Listen([]string{fx.vm("a")}, []int{9000})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Close()
	if src, err := fx.tcp("e", "10.101.128.10", 9000); err != nil || src != "10.101.0.14" {
		t.Errorf("e -> a:9000 after repair: %q, %v", src, err)
	}
	if _, err := fx.tcp("c", "10.101.128.10", 9000); err == nil {
		t.Error("c -> a:9000 got through after repair")
	}
}

// A rule edited by hand behind its unchanged comment is still drift: the
// read-back compares what rules do, not only the text bothnia wrote.
func TestResyncFindsARuleEditedBehindItsComment(t *testing.T) {
	_, x, f, ns := nftNode(t)
	if _, err := x.Program(f, "knox-c1"); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ip", "netns", "exec", ns, "nft", "-a", "list", "chain", "inet", firewall.FWTable, "to-port").CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var handle, comment string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "ct state invalid") && strings.Contains(line, "# handle ") {
			handle = strings.TrimSpace(line[strings.LastIndex(line, "# handle ")+len("# handle "):])
			comment = line[strings.Index(line, `comment "`)+len(`comment "`):]
			comment = comment[:strings.Index(comment, `"`)]
		}
	}
	if handle == "" {
		t.Fatalf("no invalid-drop rule in\n%s", out)
	}
	// Same comment, opposite verdict.
	if out, err := exec.Command("ip", "netns", "exec", ns, "nft", "replace", "rule", "inet", firewall.FWTable, "to-port", "handle", handle,
		"ct", "state", "invalid", "counter", "accept", "comment", `"`+comment+`"`).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	drift, err := x.Resync()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(drift, "chain inet "+firewall.FWTable+" to-port differs") {
		t.Fatalf("the edited rule was not found: drift %v", drift)
	}
	out, _ = exec.Command("ip", "netns", "exec", ns, "nft", "list", "chain", "inet", firewall.FWTable, "to-port").CombinedOutput()
	if strings.Contains(string(out), "invalid counter packets 0 bytes 0 accept") || !strings.Contains(string(out), "ct state invalid counter packets 0 bytes 0 drop") {
		t.Fatalf("not repaired:\n%s", out)
	}
}
