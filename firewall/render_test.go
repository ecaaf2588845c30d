package firewall

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/bothnia/bothnia/spec"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func example(t *testing.T) (*spec.Spec, *Fabric) {
	t.Helper()
	s, err := spec.Load("../examples/knox-epouta.yaml")
	if err != nil {
		t.Fatal(err)
	}
	f, err := Compile(s)
	if err != nil {
		t.Fatal(err)
	}
	return s, f
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := "testdata/" + name
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test ./firewall -update creates it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs; if intended, go test ./firewall -update\n--- got\n%s", path, got)
	}
}

func TestGoldenNFT(t *testing.T) {
	_, f := example(t)
	golden(t, "knox-c2.nft", RenderNFT(f, "knox-c2").String())
}

func TestGoldenIPTables(t *testing.T) {
	_, f := example(t)
	golden(t, "knox-c2.iptables", RenderIPTables(f, "knox-c2").String())
}

func TestRemoteGroupMembersSpanSites(t *testing.T) {
	_, f := example(t)
	var got []string
	for _, m := range f.Sets["mosler"] {
		got = append(got, m.String())
	}
	want := "10.101.0.10/32 10.101.0.11/32 10.101.128.10/32 10.101.128.11/32 192.168.0.0/24"
	if strings.Join(got, " ") != want {
		t.Fatalf("mosler members %v, want %s (both sites, and knox-vm2's allowed pair)", got, want)
	}
}

func TestNormalizeDropsCoveredPrefixes(t *testing.T) {
	in := []netip.Prefix{netip.MustParsePrefix("10.0.0.5/32"), netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("10.0.1.1/32")}
	got := Normalize(in)
	if len(got) != 2 || got[0].String() != "10.0.0.0/24" || got[1].String() != "10.0.1.1/32" {
		t.Fatalf("got %v", got)
	}
}

func TestPortIDsAreStable(t *testing.T) {
	s, f := example(t)
	before := map[string]uint16{}
	for _, p := range f.Ports {
		if p.ID == 0 {
			t.Fatalf("port %s has ID 0", p.Name)
		}
		before[p.Name] = p.ID
	}
	s.Networks[0].VMs = append(s.Networks[0].VMs, &spec.VM{Name: "new", Node: "knox-c1", IP: "10.101.128.99", MAC: "fa:16:3e:80:00:99", SecurityGroups: []string{"mosler"}})
	f2, err := Compile(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f2.Ports {
		if id, ok := before[p.Name]; ok && id != p.ID {
			t.Errorf("port %s changed ID %d -> %d when another port was added", p.Name, id, p.ID)
		}
	}
}

// The reference evaluator on Neutron's semantics.
func TestEvaluator(t *testing.T) {
	_, f := example(t)
	knox1, knox2, ep1 := f.Port("knox-vm1"), f.Port("knox-vm2"), f.Port("epouta-vm1")
	sb1, sb2 := f.Port("sandbox-vm1"), f.Port("sandbox-vm2")
	a := netip.MustParseAddr
	cases := []struct {
		name     string
		from, to *Port
		pkt      Packet
		want     bool
	}{
		{"remote group, other site", ep1, knox1, Packet{a("10.101.0.10"), a("10.101.128.10"), 6, 7000, 0}, true},
		{"no rule for the port", ep1, knox1, Packet{a("10.101.0.10"), a("10.101.128.10"), 6, 7001, 0}, false},
		{"icmp from the fabric prefix", knox2, knox1, Packet{a("10.101.128.11"), a("10.101.128.10"), 1, 8, 0}, true},
		{"ssh from the prefix", knox2, ep1, Packet{a("10.101.128.11"), a("10.101.0.10"), 6, 22, 0}, true},
		{"allowed pair is a member", knox2, knox1, Packet{a("192.168.0.7"), a("10.101.128.10"), 6, 7000, 0}, true},
		{"pair is not in the icmp prefix", knox2, knox1, Packet{a("192.168.0.7"), a("10.101.128.10"), 1, 8, 0}, false},
		{"default group members", sb1, sb2, Packet{a("10.101.128.20"), a("10.101.128.21"), 17, 53, 0}, true},
		{"not a default member", knox1, sb2, Packet{a("10.101.128.10"), a("10.101.128.21"), 6, 7000, 0}, false},
		{"default egress to the world", knox1, nil, Packet{a("10.101.128.10"), a("198.51.100.10"), 6, 443, 0}, true},
		{"ipv6 needs an ipv6 rule", knox2, knox1, Packet{a("fd00::2"), a("fd00::1"), 6, 7000, 0}, false},
	}
	for _, c := range cases {
		if got := f.Allows(c.from, c.to, c.pkt); got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
}

// Overlapping allowed address pairs of one MAC would be overlapping
// elements of an interval set, which the kernel refuses for the whole
// transaction: the covered one is left out, the covering one kept.
func TestOverlappingPairsRenderOnce(t *testing.T) {
	s, _ := example(t)
	vm := s.Networks[0].VMs[0]
	vm.AllowedAddressPairs = []spec.AddressPair{{IP: "192.168.7.0/28"}, {IP: "192.168.7.12"}, {IP: "2001:db8::/64"}, {IP: "2001:db8::5"}}
	f, err := Compile(s)
	if err != nil {
		t.Fatal(err)
	}
	rs := RenderNFT(f, vm.Node).String()
	for _, want := range []string{"192.168.7.0/28", "2001:db8::/64"} {
		if !strings.Contains(rs, want) {
			t.Errorf("missing %s", want)
		}
	}
	for _, covered := range []string{"192.168.7.12/32", "2001:db8::5/128"} {
		if strings.Contains(rs, covered) {
			t.Errorf("%s is inside another pair and must not be an element of its own", covered)
		}
	}
	p := f.Port(vm.Name)
	if !p.pairAllows(p.MAC, netip.MustParseAddr("192.168.7.12")) {
		t.Error("the evaluator must still allow the covered address")
	}
}

// A port's dispatch ID on a node never moves when others come: the one it
// was programmed with is kept, and a new port whose fabric-wide number is
// taken on the node gets a free one.
func TestPortIDsStayPerNode(t *testing.T) {
	s, f := example(t)
	have := f.PortIDs("knox-c1", nil)
	var taken uint16
	for _, id := range have {
		taken = id
	}
	s.Networks[0].VMs = append(s.Networks[0].VMs, &spec.VM{Name: "new", Node: "knox-c1", IP: "10.101.128.99", MAC: "fa:16:3e:80:00:99", SecurityGroups: []string{"mosler"}})
	f2, err := Compile(s)
	if err != nil {
		t.Fatal(err)
	}
	// Force the clash the fabric-wide hash can produce.
	for i := range f2.Ports {
		if f2.Ports[i].VM == "new" {
			f2.Ports[i].ID = taken
		}
	}
	got := f2.PortIDs("knox-c1", have)
	seen := map[uint16]string{}
	for tap, id := range got {
		if old, ok := have[tap]; ok && old != id {
			t.Errorf("%s moved from %d to %d when a port was added", tap, old, id)
		}
		if other, dup := seen[id]; dup {
			t.Errorf("%s and %s share ID %d", tap, other, id)
		}
		seen[id] = tap
	}
	if len(got) != len(have)+1 {
		t.Fatalf("ids %v", got)
	}
}

// A node rendered again with its kept port elements is the node rendered
// afresh, whatever changed in between: a port added, a port's groups or
// address changed, a port removed.
func TestRenderWithKeptPortsMatchesAFreshRender(t *testing.T) {
	s, _ := example(t)
	node := s.Networks[0].VMs[0].Node
	var cache portCache
	vm := func(name string) *spec.VM { v, _ := s.VM(name); return v }
	steps := []struct {
		name string
		edit func()
	}{
		{"as is", func() {}},
		{"a port added", func() {
			s.Networks[0].VMs = append(s.Networks[0].VMs, &spec.VM{Name: "new", Node: node, IP: "10.101.128.99", MAC: "fa:16:3e:80:00:99", SecurityGroups: []string{"mosler"}})
		}},
		{"its groups changed", func() { vm("new").SecurityGroups = []string{"mosler", "default"} }},
		{"its address changed", func() { vm("new").IP = "10.101.128.98" }},
		{"a pair added", func() { vm("new").AllowedAddressPairs = []spec.AddressPair{{IP: "192.168.7.0/28"}} }},
		{"it left", func() { s.Networks[0].VMs = s.Networks[0].VMs[:len(s.Networks[0].VMs)-1] }},
	}
	for _, st := range steps {
		st.edit()
		f, err := Compile(s)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		zones, ids := f.Zones(node, nil), f.PortIDs(node, nil)
		got := renderNFTNode(f, node, zones, ids, &cache).String()
		if want := RenderNFTNode(f, node, zones, ids).String(); got != want {
			t.Fatalf("%s: the render with kept ports differs from a fresh one:\n%s\nwant\n%s", st.name, got, want)
		}
		if len(cache.m) != len(f.Node(node)) {
			t.Fatalf("%s: %d ports kept, the node has %d", st.name, len(cache.m), len(f.Node(node)))
		}
	}
}

// Enough ports on a node to be rendered on every CPU: the render is the
// same as one port at a time, fresh and after a port changed.
func TestRenderOfManyPortsMatches(t *testing.T) {
	s, _ := example(t)
	node := s.Networks[0].VMs[0].Node
	for i := 0; i < 1500; i++ {
		s.Networks[0].VMs = append(s.Networks[0].VMs, &spec.VM{Name: fmt.Sprintf("many-%d", i), Node: node,
			IP: fmt.Sprintf("10.101.%d.%d", 140+i/250, i%250+1), MAC: fmt.Sprintf("fa:16:3e:90:%02x:%02x", i/256, i%256), SecurityGroups: []string{"mosler"}})
	}
	var cache portCache
	for step := 0; step < 2; step++ {
		f, err := Compile(s)
		if err != nil {
			t.Fatal(err)
		}
		zones, ids := f.Zones(node, nil), f.PortIDs(node, nil)
		got := renderNFTNode(f, node, zones, ids, &cache).String()
		prev := runtime.GOMAXPROCS(1) // the reference: one port at a time
		want := RenderNFTNode(f, node, zones, ids).String()
		runtime.GOMAXPROCS(prev)
		if got != want {
			t.Fatalf("step %d: the parallel render differs from a fresh one", step)
		}
		s.Networks[0].VMs[len(s.Networks[0].VMs)-1].SecurityGroups = []string{"default"}
	}
}
