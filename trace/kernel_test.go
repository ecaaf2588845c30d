package trace

import (
	"strings"
	"testing"
)

func TestKernelHop(t *testing.T) {
	h, ok := KernelHop("knox-c1", false, `trace id 5c8f0a2b bridge bothnia-l2 forward rule iifname . ether saddr . ip saddr != @spoof-v4 counter name "spoofed-source" drop (verdict drop)`)
	if !ok || h.Node != "knox-c1" || h.Drop != "bridge bothnia-l2 forward" {
		t.Fatalf("drop line read as %+v %v", h, ok)
	}
	if h, ok := KernelHop("knox-c1", true, `trace id 5c8f0a2b ip bothnia-trace pre packet: iif "qr-1" ip saddr 10.101.128.10`); !ok || h.Drop != "" || !h.Router {
		t.Fatalf("packet line read as %+v %v", h, ok)
	}
	if _, ok := KernelHop("x", false, "something else"); ok {
		t.Fatal("a line that is no trace was read as one")
	}
}

func TestCompare(t *testing.T) {
	base := Trace{SrcNode: "knox-c1", DstNode: "epouta-c1"}
	cases := []struct {
		name   string
		stage  string
		verd   string
		router string
		hops   []Hop
		want   string // a disagreement containing this, or "" for none
	}{
		{"delivered across sites", "ingress", "delivered", "", []Hop{{Node: "knox-c1"}, {Node: "epouta-c1"}}, ""},
		{"delivered but dropped", "ingress", "delivered", "", []Hop{{Node: "knox-c1"}, {Node: "epouta-c1", Drop: "ip filter bothnia-sg-fallback"}}, "the kernel dropped it at epouta-c1"},
		{"delivered, far node never saw it", "ingress", "delivered", "", []Hop{{Node: "knox-c1"}}, "did not trace it there"},
		{"ingress drop on the destination", "ingress", "dropped", "", []Hop{{Node: "knox-c1"}, {Node: "epouta-c1", Drop: "ip filter bothnia-sg-fallback"}}, ""},
		{"ingress drop on the wrong node", "ingress", "dropped", "", []Hop{{Node: "knox-c1", Drop: "inet bothnia-fw forward"}}, "the kernel at knox-c1"},
		{"spoofing dropped in the bridge table", "anti-spoofing", "dropped", "", []Hop{{Node: "knox-c1", Drop: "bridge bothnia-l2 forward"}}, ""},
		{"spoofing dropped by a group chain", "anti-spoofing", "dropped", "", []Hop{{Node: "knox-c1", Drop: "inet bothnia-fw forward"}}, "a chain of group"},
		{"egress dropped in Neutron's egress chain", "egress", "dropped", "", []Hop{{Node: "knox-c1", Drop: "ip filter bothnia-oabc"}}, ""},
		{"egress dropped in an ingress chain", "egress", "dropped", "", []Hop{{Node: "knox-c1", Drop: "ip filter bothnia-iabc"}}, "a chain of ingress"},
		{"no kernel drop", "egress", "dropped", "", []Hop{{Node: "knox-c1"}}, "no kernel rule dropped it"},
		{"no route, seen by the router", "route", "dropped", "knox-ctl", []Hop{{Node: "knox-c1"}, {Node: "knox-ctl", Router: true}}, ""},
		{"no route, router never saw it", "route", "dropped", "knox-ctl", []Hop{{Node: "knox-c1"}}, "did not trace it there"},
		{"no router on the network: never left the VM", "route", "dropped", "", nil, ""},
		{"unanswered flood: never left the VM", "bridge", "dropped", "", nil, ""},
		{"egress drop never seen", "egress", "dropped", "", nil, "never left the VM"},
	}
	for _, c := range cases {
		tr := base
		tr.Verdict, tr.RouterNode = c.verd, c.router
		res := "drop"
		if c.verd == "delivered" {
			res = "accept"
		}
		tr.Stages = []Stage{{Stage: "source"}, {Stage: c.stage, Result: res}}
		got := strings.Join(tr.Compare(c.hops), "; ")
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("%s: disagreements %q, want %q", c.name, got, c.want)
		}
	}
}
