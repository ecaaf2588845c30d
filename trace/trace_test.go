package trace

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/bothnia/bothnia/check"
	"github.com/bothnia/bothnia/firewall"
	"github.com/bothnia/bothnia/spec"
)

func example(t *testing.T) *spec.Spec {
	t.Helper()
	s, err := spec.Load("../examples/knox-epouta.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Every cell of check's matrix, allowed or denied, is explained by a trace
// that reaches the same verdict.
func TestTraceAgreesWithCheck(t *testing.T) {
	s := example(t)
	fw, err := firewall.Compile(s)
	if err != nil {
		t.Fatal(err)
	}
	var eps []check.Endpoint
	for _, a := range s.Router.Allow {
		eps = append(eps, check.Endpoint{Name: a.Name, Addr: spec.AllowedPrefix(a.Prefix).Addr(), Allowed: true})
	}
	for _, b := range s.Lab.Blocked {
		eps = append(eps, check.Endpoint{Name: b.Name, Addr: spec.AllowedPrefix(b.Prefix).Addr()})
	}
	probes := check.Expect(s, fw, eps)
	if len(probes) < 50 {
		t.Fatalf("only %d probes", len(probes))
	}
	for _, p := range probes {
		r := Request{From: p.From, To: p.To.Addr.String(), Proto: p.Kind, Port: p.Port}
		if p.Kind == check.ICMP {
			r.Proto = "icmp"
		}
		tr, err := Run(s, r)
		if err != nil {
			t.Fatalf("%s -> %s %s: %v", p.From, p.To.Name, p.Kind, err)
		}
		if got := tr.Verdict == "delivered"; got != p.Want {
			t.Errorf("%s -> %s %s %d: trace says %s, check expects %v\n%s", p.From, p.To.Name, p.Kind, p.Port, tr.Verdict, p.Want, tr)
		}
		if len(tr.Stages) < 2 {
			t.Errorf("%s -> %s: a trace of %d stages explains nothing", p.From, p.To.Name, len(tr.Stages))
		}
	}
}

func TestTraceStages(t *testing.T) {
	s := example(t)
	cases := []struct {
		r       Request
		verdict string
		has     []string // substrings of the stages, in order
	}{
		{Request{From: "epouta-vm1", To: "knox-vm1", Proto: "tcp", Port: 7000}, "delivered",
			[]string{"anti-spoofing pass", "egress pass security group mosler", "uplink carried em1.1203 tagged 1203, from epouta-c1 to knox-c1", "ingress accept security group mosler rule 2 (ingress IPv4 tcp port 7000 from members of mosler)"}},
		{Request{From: "knox-vm2", To: "knox-vm1", SrcIP: "10.101.128.99"}, "dropped",
			[]string{"anti-spoofing drop port tapd0f63e5c-d9 (knox-vm2): source fa:16:3e:80:00:0b 10.101.128.99 not among the port's pairs"}},
		{Request{From: "knox-vm1", To: "uu-dns", Proto: "udp", Port: 53}, "delivered",
			[]string{"router received", "route routed allowlist uu-dns", "snat rewritten source 10.101.128.10 -> 10.5.0.2"}},
		{Request{From: "knox-vm1", To: "198.51.100.99", Proto: "tcp", Port: 443}, "dropped",
			[]string{"route drop 198.51.100.99 is on no allowlist entry"}},
		{Request{From: "knox-vm1", To: "sandbox-vm1"}, "dropped",
			[]string{"no path between networks"}},
	}
	for _, c := range cases {
		tr, err := Run(s, c.r)
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		for _, st := range tr.Stages {
			lines = append(lines, st.Stage+" "+st.Result+" "+st.Object)
		}
		all := strings.Join(lines, "\n")
		at := 0
		for _, h := range c.has {
			i := strings.Index(all[at:], h)
			if i < 0 {
				t.Errorf("%s -> %s: no stage %q after position %d in\n%s", c.r.From, c.r.To, h, at, all)
				break
			}
			at += i + len(h)
		}
		if tr.Verdict != c.verdict {
			t.Errorf("%s -> %s: verdict %s, want %s", c.r.From, c.r.To, tr.Verdict, c.verdict)
		}
		// The JSON form is the documented schema: from, to, packet,
		// stages[{stage, object, result}], verdict.
		b, _ := json.Marshal(tr)
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"from", "to", "packet", "stages", "verdict", "src_node"} {
			if _, ok := m[k]; !ok {
				t.Errorf("json has no %q: %s", k, b)
			}
		}
	}
	if _, err := Run(s, Request{From: "nobody", To: "knox-vm1"}); err == nil || !strings.Contains(err.Error(), `"nobody" is neither a VM`) {
		t.Errorf("unknown FROM: %v", err)
	}
}

// A stage a foreign site's own cloud decides is marked as such: the model
// follows Neutron there, but trace cannot see into its rules.
func TestForeignStagesAreMarked(t *testing.T) {
	s := example(t)
	tr, err := Run(s, Request{From: "knox-vm1", To: "epouta-vm1", Proto: "tcp", Port: 7001})
	if err != nil {
		t.Fatal(err)
	}
	last := tr.Stages[len(tr.Stages)-1]
	if last.Stage != "ingress" || last.Cloud != "epouta" {
		t.Errorf("ingress at ePouta: %+v, want it marked as site epouta's cloud's", last)
	}
	for _, st := range tr.Stages {
		if (st.Stage == "anti-spoofing" || st.Stage == "egress") && st.Cloud != "" {
			t.Errorf("knox-vm1's own %s is bothnia's, marked %q", st.Stage, st.Cloud)
		}
	}
	if !strings.Contains(tr.String(), "site epouta's own cloud decides this") {
		t.Errorf("the trace does not say so:\n%s", tr)
	}
}
