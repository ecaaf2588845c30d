package check

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/bothnia/bothnia/firewall"
	"github.com/bothnia/bothnia/spec"
)

func example(t *testing.T) (*spec.Spec, *firewall.Fabric) {
	t.Helper()
	s, err := spec.Load("../examples/knox-epouta.yaml")
	if err != nil {
		t.Fatal(err)
	}
	f, err := firewall.Compile(s)
	if err != nil {
		t.Fatal(err)
	}
	return s, f
}

var endpoints = []Endpoint{
	{Name: "knox-api", Addr: netip.MustParseAddr("198.51.100.10"), Allowed: true},
	{Name: "not-allowlisted", Addr: netip.MustParseAddr("203.0.113.99")},
}

func find(ps []Probe, from, to, kind string, port int) *Probe {
	for i := range ps {
		if ps[i].From == from && ps[i].To.Name == to && ps[i].Kind == kind && ps[i].Port == port {
			return &ps[i]
		}
	}
	return nil
}

func TestExpect(t *testing.T) {
	s, f := example(t)
	ps := Expect(s, f, endpoints)
	// 6 VMs: 6*5 VM pairs by icmp and two tcp ports, 6*2 endpoints by icmp and tcp.
	if len(ps) != 30*3+12*2 {
		t.Fatalf("got %d probes", len(ps))
	}
	cases := []struct {
		from, to, kind string
		port           int
		want           bool
		src            string
	}{
		{"knox-vm1", "epouta-vm1", TCP, 7000, true, "10.101.128.10"},     // remote group across sites
		{"knox-vm1", "epouta-vm1", TCP, 7001, false, ""},                 // no rule allows 7001
		{"epouta-vm1", "epouta-vm2", ICMP, 0, true, ""},                  // icmp from the fabric prefix
		{"knox-vm1", "sandbox-vm1", ICMP, 0, false, ""},                  // other project
		{"sandbox-vm1", "sandbox-vm2", TCP, 7001, true, "10.101.128.20"}, // default group: members reach all
		{"sandbox-vm2", "epouta-vm2", TCP, 7000, false, ""},
		{"epouta-vm2", "knox-api", TCP, 7000, true, "10.5.0.2"}, // through SNAT
		{"knox-vm1", "not-allowlisted", TCP, 7000, false, ""},   // not on the allowlist
		{"sandbox-vm1", "knox-api", TCP, 7000, false, ""},       // no router on the sandbox
	}
	for _, c := range cases {
		p := find(ps, c.from, c.to, c.kind, c.port)
		if p == nil {
			t.Errorf("no %s/%d probe %s -> %s", c.kind, c.port, c.from, c.to)
			continue
		}
		if p.Want != c.want || p.WantSource != c.src {
			t.Errorf("%s/%d %s -> %s: want=%v source=%q, expected want=%v source=%q", c.kind, c.port, c.from, c.to, p.Want, p.WantSource, c.want, c.src)
		}
	}
}

// fake answers from a table of reachable (from, addr, port) triples.
type fake struct {
	reach map[string]string // "from addr port" -> source seen
}

func key(from string, a netip.Addr, port int) string { return fmt.Sprintf("%s %s %d", from, a, port) }

func (f fake) ICMP(_ context.Context, from string, a netip.Addr) error {
	if _, ok := f.reach[key(from, a, 0)]; ok {
		return nil
	}
	return errors.New("timeout")
}

func (f fake) TCP(_ context.Context, from string, a netip.Addr, port int) (string, error) {
	if src, ok := f.reach[key(from, a, port)]; ok {
		return src, nil
	}
	return "", errors.New("no route to host")
}

func TestRunAndMatrix(t *testing.T) {
	s, fw := example(t)
	ps := Expect(s, fw, endpoints)
	f := fake{reach: map[string]string{}}
	for _, p := range ps {
		if p.Want {
			f.reach[key(p.From, p.To.Addr, p.Port)] = p.WantSource
		}
	}
	rs := Run(context.Background(), ps, f, 4)
	if n := Failed(rs); n != 0 {
		t.Fatalf("a fabric that does what the spec says has %d failures:\n%s", n, Matrix(rs))
	}
	m := Matrix(rs)
	if strings.Contains(m, "FAIL ") || !strings.Contains(m, " 0 failed") || !strings.Contains(m, "++.") {
		t.Fatalf("matrix:\n%s", m)
	}

	// An open router (the blocked endpoint answers), a missing SNAT (the
	// endpoint sees the VM's own address) and an open port must all show.
	f.reach[key("knox-vm1", netip.MustParseAddr("203.0.113.99"), 7000)] = "10.5.0.2"
	f.reach[key("knox-vm2", netip.MustParseAddr("198.51.100.10"), 7000)] = "10.101.128.11"
	f.reach[key("knox-vm2", netip.MustParseAddr("10.101.0.10"), 7001)] = "10.101.128.11"
	rs = Run(context.Background(), ps, f, 4)
	m = Matrix(rs)
	for _, want := range []string{
		"FAIL tcp/7000 knox-vm1 -> not-allowlisted (203.0.113.99): want blocked, got reachable seen from 10.5.0.2",
		"FAIL tcp/7000 knox-vm2 -> knox-api (198.51.100.10): want reachable seen from 10.5.0.2, got reachable seen from 10.101.128.11",
		"FAIL tcp/7001 knox-vm2 -> epouta-vm1 (10.101.0.10): want blocked, got reachable",
		"++X",
		"3 failed",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("matrix lacks %q:\n%s", want, m)
		}
	}
}
