package plan

import (
	"testing"

	"github.com/bothnia/bothnia/spec"
)

func loadHA(t *testing.T, active string) *spec.Spec {
	t.Helper()
	s, err := spec.Load("../examples/knox-epouta-ha.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s.Router.Active = active
	return s
}

func TestGoldenReplicas(t *testing.T) {
	p, err := Compile(loadHA(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "knox-epouta-ha.vlan", p.String())
}

func routerNS(t *testing.T, n *Node) *Namespace {
	t.Helper()
	for i := range n.Namespaces {
		if n.Namespaces[i].Role == RoleRouter {
			return &n.Namespaces[i]
		}
	}
	t.Fatalf("node %s has no router namespace", n.Name)
	return nil
}

// A standby has the active replica's namespace, addresses, MACs and NAT,
// its legs down and no routes; which replica serves moves where every
// other node sends frames for the router's MAC, and nothing else.
func TestReplicasDifferOnlyInWhoServes(t *testing.T) {
	pc, err := Compile(loadHA(t, "knox-ctl"))
	if err != nil {
		t.Fatal(err)
	}
	p1, err := Compile(loadHA(t, "knox-c1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		p               *Plan
		active, standby string
	}{{pc, "knox-ctl", "knox-c1"}, {p1, "knox-c1", "knox-ctl"}} {
		a, s := routerNS(t, c.p.Node(c.active)), routerNS(t, c.p.Node(c.standby))
		if a.Name != s.Name || len(a.Links) != len(s.Links) {
			t.Fatalf("replicas differ in namespace or links: %s %v / %s %v", a.Name, a.Links, s.Name, s.Links)
		}
		for i := range a.Links {
			al, sl := a.Links[i], s.Links[i]
			if al.Name != sl.Name || al.MAC != sl.MAC || (al.Name != "ha" && al.Addrs[0] != sl.Addrs[0]) {
				t.Errorf("leg %s differs between replicas: %v / %v", al.Name, al, sl)
			}
			if al.Down {
				t.Errorf("active %s: leg %s down", c.active, al.Name)
			}
			if sl.Down != (sl.Name != "ha") {
				t.Errorf("standby %s: leg %s down=%v; want every leg but ha down", c.standby, sl.Name, sl.Down)
			}
		}
		if len(a.Routes) != 4 || len(s.Routes) != 0 {
			t.Errorf("routes: active %d, standby %d; want 4 and 0", len(a.Routes), len(s.Routes))
		}
		if len(a.SNAT) != 1 || len(s.SNAT) != 1 {
			t.Errorf("SNAT: active %v, standby %v; want it in place on both", a.SNAT, s.SNAT)
		}
	}
	// Every other node of the router's network sends its MAC to the
	// active replica's underlay; the standby sends it there too.
	for _, c := range []struct{ active, underlay string }{{"knox-ctl", "172.30.0.11"}, {"knox-c1", "172.30.0.12"}} {
		s := loadHA(t, c.active)
		s.Link.Mode, s.Link.Device = "vxlan", "ul0"
		if err := s.Validate(); err != nil {
			t.Fatal(err)
		}
		p, err := Compile(s)
		if err != nil {
			t.Fatal(err)
		}
		mac := InfraMAC(RouterPortID(s))
		for _, n := range []string{"knox-c2", "epouta-c1", "knox-ctl", "knox-c1"} {
			if n == c.active {
				continue
			}
			dst := ""
			for _, l := range p.Node(n).Namespace(HostNS).Links {
				for _, f := range l.FDB {
					if l.Kind == VXLAN && f.MAC == mac {
						dst = f.Dst
					}
				}
			}
			if dst != c.underlay {
				t.Errorf("%s serving: %s sends the router's MAC to %q; want %s", c.active, n, dst, c.underlay)
			}
		}
	}
}
