package plan

import (
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/bothnia/bothnia/spec"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func load(t *testing.T, mode string) *spec.Spec {
	t.Helper()
	s, err := spec.Load("../examples/knox-epouta.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if mode == "vxlan" {
		s.Link.Mode, s.Link.Device = "vxlan", "ul0"
		if err := s.Validate(); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := "testdata/" + name + ".golden"
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./plan -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the plan; if the change is intended run go test ./plan -update.\n--- got\n%s", path, got)
	}
}

func TestGolden(t *testing.T) {
	for _, mode := range []string{"vlan", "vxlan"} {
		t.Run(mode, func(t *testing.T) {
			p, err := Compile(load(t, mode))
			if err != nil {
				t.Fatal(err)
			}
			golden(t, "knox-epouta."+mode, p.String())
		})
	}
}

func TestCompileIsDeterministic(t *testing.T) {
	s := load(t, "vxlan")
	a, _ := Compile(s)
	b, _ := Compile(s)
	for i := range a.Nodes {
		if !a.Nodes[i].Equal(&b.Nodes[i]) {
			t.Fatalf("node %s differs between two compilations", a.Nodes[i].Name)
		}
	}
}

func TestRouterHasNoDefaultRoute(t *testing.T) {
	p, _ := Compile(load(t, "vxlan"))
	n := p.Node("knox-ctl")
	var router *Namespace
	for i := range n.Namespaces {
		if n.Namespaces[i].Role == RoleRouter {
			router = &n.Namespaces[i]
		}
	}
	if router == nil {
		t.Fatal("knox-ctl has no router namespace")
	}
	if len(router.Routes) != 4 {
		t.Fatalf("want the 4 allowlisted routes, got %v", router.Routes)
	}
	for _, r := range router.Routes {
		if r.Dst == "0.0.0.0/0" || !strings.HasSuffix(r.Dst, "/32") || r.Via != "10.5.0.1" || r.Dev != "gw" {
			t.Errorf("router route %v: want host routes via 10.5.0.1 dev gw only", r)
		}
	}
	if len(router.SNAT) != 1 || router.SNAT[0] != (SNAT{OutIface: "gw", To: "10.5.0.2"}) {
		t.Errorf("want SNAT out of gw to 10.5.0.2, got %v", router.SNAT)
	}
}

// Broadcast reaches only nodes with ports on the network: the sandbox has
// VMs on knox-c1 and knox-c2 only, so nothing of it exists at ePouta and its
// flood lists name only those two.
func TestFloodOnlyToNodesWithPorts(t *testing.T) {
	s := load(t, "vxlan")
	p, _ := Compile(s)
	sandbox := BridgeName(NetworkID(s, s.Network("sandbox")))
	for _, n := range p.Nodes {
		host := n.Namespace(HostNS)
		has := false
		for _, l := range host.Links {
			if l.Name == sandbox {
				has = true
			}
			if l.Kind == VXLAN && l.VXLAN.VNI == 1204 {
				var flood []string
				for _, f := range l.FDB {
					if f.MAC == FloodMAC {
						flood = append(flood, f.Dst)
					}
				}
				if len(flood) != 1 {
					t.Errorf("%s: sandbox flood list %v, want exactly the other knox compute", n.Name, flood)
				}
			}
		}
		want := n.Name == "knox-c1" || n.Name == "knox-c2"
		if has != want {
			t.Errorf("%s: sandbox bridge present=%v, want %v", n.Name, has, want)
		}
	}
}

// The bridge MAC must not depend on which ports are plugged: that was the
// seed's learning bug.
func TestBridgeMACIsFixed(t *testing.T) {
	s := load(t, "vxlan")
	p1, _ := Compile(s)
	mgmt := s.Network("mgmt")
	mgmt.VMs = append(mgmt.VMs, &spec.VM{Name: "knox-vm3", Node: "knox-c1", IP: "10.101.128.12", MAC: "00:00:00:00:00:01"})
	p2, _ := Compile(s)
	br := BridgeName(NetworkID(s, mgmt))
	mac := func(p *Plan) string {
		for _, l := range p.Node("knox-c1").Namespace(HostNS).Links {
			if l.Name == br {
				return l.MAC
			}
		}
		return ""
	}
	if mac(p1) == "" || mac(p1) != mac(p2) {
		t.Fatalf("bridge MAC changed from %q to %q when a port with a lower MAC was added", mac(p1), mac(p2))
	}
	if l := p2.Node("knox-c1").Namespace(HostNS).Links[0]; l.AgeingCentis != DefaultAgeingCentis {
		t.Errorf("bridges keep normal ageing, got %d", l.AgeingCentis)
	}
}

func TestVLANUplink(t *testing.T) {
	p, _ := Compile(load(t, "vlan"))
	var names []string
	for _, l := range p.Node("epouta-c1").Namespace(HostNS).Links {
		if l.Kind == VLAN {
			names = append(names, l.Name)
			if l.VLAN.Parent != "em1" || l.VLAN.ID != 1203 || l.MTU != 1500 {
				t.Errorf("vlan uplink %+v", l)
			}
		}
	}
	if len(names) != 1 || names[0] != "em1.1203" {
		t.Fatalf("epouta-c1 uplinks %v, want [em1.1203]", names)
	}
}

func TestInterfaceNamesFitIFNAMSIZ(t *testing.T) {
	p, _ := Compile(load(t, "vxlan"))
	for _, n := range p.Nodes {
		for _, ns := range n.Namespaces {
			for _, l := range ns.Links {
				if len(l.Name) > 15 {
					t.Errorf("%s: %s is longer than 15 characters", n.Name, l.Name)
				}
			}
		}
	}
}
