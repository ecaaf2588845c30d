package check

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

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

var endpoints = []Endpoint{
	{Name: "knox-api", Addr: netip.MustParseAddr("198.51.100.10"), Allowed: true},
	{Name: "not-allowlisted", Addr: netip.MustParseAddr("203.0.113.99")},
}

func find(ps []Probe, from, to, kind string) *Probe {
	for i := range ps {
		if ps[i].From == from && ps[i].To.Name == to && ps[i].Kind == kind {
			return &ps[i]
		}
	}
	return nil
}

func TestExpect(t *testing.T) {
	ps := Expect(example(t), endpoints)
	// 6 VMs: 6*5 VM pairs and 6*2 endpoints, each by icmp and tcp.
	if len(ps) != (30+12)*2 {
		t.Fatalf("got %d probes", len(ps))
	}
	cases := []struct {
		from, to, kind string
		want           bool
		src            string
	}{
		{"knox-vm1", "epouta-vm1", TCP, true, "10.101.128.10"}, // across sites
		{"epouta-vm1", "epouta-vm2", ICMP, true, ""},           // within a site
		{"knox-vm1", "sandbox-vm1", ICMP, false, ""},           // other project
		{"sandbox-vm2", "epouta-vm2", TCP, false, ""},
		{"epouta-vm2", "knox-api", TCP, true, "10.5.0.2"}, // through SNAT
		{"knox-vm1", "not-allowlisted", TCP, false, ""},   // not on the allowlist
		{"sandbox-vm1", "knox-api", TCP, false, ""},       // no router on the sandbox
	}
	for _, c := range cases {
		p := find(ps, c.from, c.to, c.kind)
		if p == nil {
			t.Errorf("no %s probe %s -> %s", c.kind, c.from, c.to)
			continue
		}
		if p.Want != c.want || p.WantSource != c.src {
			t.Errorf("%s %s -> %s: want=%v source=%q, expected want=%v source=%q", c.kind, c.from, c.to, p.Want, p.WantSource, c.want, c.src)
		}
	}
}

// fake answers from a table of reachable (from, addr) pairs.
type fake struct {
	reach map[string]string // "from addr" -> source seen
}

func (f fake) ICMP(_ context.Context, from string, a netip.Addr) error {
	if _, ok := f.reach[from+" "+a.String()]; ok {
		return nil
	}
	return errors.New("timeout")
}

func (f fake) TCP(_ context.Context, from string, a netip.Addr) (string, error) {
	if src, ok := f.reach[from+" "+a.String()]; ok {
		return src, nil
	}
	return "", errors.New("no route to host")
}

func TestRunAndMatrix(t *testing.T) {
	s := example(t)
	ps := Expect(s, endpoints)
	f := fake{reach: map[string]string{}}
	for _, p := range ps {
		if p.Want {
			f.reach[p.From+" "+p.To.Addr.String()] = p.WantSource
		}
	}
	rs := Run(context.Background(), ps, f, 4)
	if n := Failed(rs); n != 0 {
		t.Fatalf("a fabric that does what the spec says has %d failures:\n%s", n, Matrix(rs))
	}
	m := Matrix(rs)
	if strings.Contains(m, "FAIL ") || !strings.Contains(m, " 0 failed") {
		t.Fatalf("matrix:\n%s", m)
	}

	// An open router (the blocked endpoint answers) and a missing SNAT
	// (the endpoint sees the VM's own address) must both show.
	f.reach["knox-vm1 203.0.113.99"] = "10.5.0.2"
	f.reach["knox-vm2 198.51.100.10"] = "10.101.128.11"
	rs = Run(context.Background(), ps, f, 4)
	m = Matrix(rs)
	for _, want := range []string{
		"FAIL tcp knox-vm1 -> not-allowlisted (203.0.113.99): want blocked, got reachable seen from 10.5.0.2",
		"FAIL tcp knox-vm2 -> knox-api (198.51.100.10): want reachable seen from 10.5.0.2, got reachable seen from 10.101.128.11",
		"3 failed",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("matrix lacks %q:\n%s", want, m)
		}
	}
}
