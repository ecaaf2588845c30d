package lab

import (
	"os"
	"slices"
	"testing"
	"time"

	"github.com/bothnia/bothnia/check"
	"github.com/bothnia/bothnia/firewall"
	"github.com/bothnia/bothnia/trace"
)

// Every cell of check's matrix for the example (ePouta foreign, its stand-in
// in Neutron's iptables layout), and a forged packet, sent for real with
// nftables tracing on: the kernel's verdict is the model's.
func TestTraceKernelAgreesWithTheModel(t *testing.T) {
	s, raw := exampleSpec(t)
	l := newLab(t, s, raw)
	fw, err := firewall.Compile(s)
	if err != nil {
		t.Fatal(err)
	}
	eps := Endpoints(s)
	type req struct{ r trace.Request }
	var reqs []req
	probes := check.Expect(s, fw, eps)
	if os.Getenv("BOTHNIA_TRACE_ALL") == "" {
		// Each kind of cell, not all 150 (about a second each): within a
		// site, across sites both ways (to and from the foreign site's
		// stand-in), another network, an allowlisted endpoint and one
		// off the list. BOTHNIA_TRACE_ALL=1 traces every cell.
		keep := map[[2]string]bool{
			{"knox-vm1", "knox-vm2"}: true, {"knox-vm1", "epouta-vm1"}: true, {"epouta-vm2", "knox-vm1"}: true,
			{"knox-vm1", "sandbox-vm1"}: true, {"sandbox-vm1", "sandbox-vm2"}: true,
			{"knox-vm2", "knox-api"}: true, {"epouta-vm1", "not-allowlisted"}: true,
		}
		probes = slices.DeleteFunc(probes, func(p check.Probe) bool { return !keep[[2]string{p.From, p.To.Name}] })
	}
	for _, p := range probes {
		r := trace.Request{From: p.From, To: p.To.Name, Proto: p.Kind, Port: p.Port}
		if !p.To.VM {
			r.To = p.To.Addr.String()
		}
		reqs = append(reqs, req{r: r})
	}
	vm2, _ := s.VM("knox-vm2")
	reqs = append(reqs,
		// Forged: another address, another MAC (dropped by anti-spoofing),
		// and the VM's own MAC in a raw frame (delivered: the frame path
		// itself is sound).
		req{trace.Request{From: "knox-vm2", To: "knox-vm1", Proto: "tcp", Port: 7000, SrcIP: "10.101.128.99"}},
		req{trace.Request{From: "knox-vm2", To: "knox-vm1", Proto: "tcp", Port: 7000, SrcMAC: "fa:16:3e:00:00:99"}},
		req{trace.Request{From: "knox-vm2", To: "knox-vm1", Proto: "tcp", Port: 7000, SrcMAC: vm2.MAC}})
	t0 := time.Now()
	delivered, dropped := 0, 0
	for _, q := range reqs {
		tr, err := trace.Run(s, q.r)
		if err != nil {
			t.Fatal(err)
		}
		k, err := l.TraceKernel(s, tr, q.r)
		if err != nil {
			t.Fatalf("%+v: %v", q.r, err)
		}
		if k.Verdict != tr.Verdict {
			t.Errorf("%s %s -> %s (port %d, src %q %q): model %s, kernel %s\n%s\nkernel:\n%v", q.r.Proto, q.r.From, q.r.To, q.r.Port, q.r.SrcIP, q.r.SrcMAC, tr.Verdict, k.Verdict, tr, k.Lines)
		}
		if len(k.Disagreements) > 0 {
			t.Errorf("%s %s -> %s (port %d, src %q %q): the kernel's path disagrees with the model's stages: %v\n%s\nkernel hops %v\n%v", q.r.Proto, q.r.From, q.r.To, q.r.Port, q.r.SrcIP, q.r.SrcMAC, k.Disagreements, tr, k.Hops, k.Lines)
		}
		if len(k.Hops) == 0 && k.Verdict == "delivered" {
			t.Errorf("%s -> %s: delivered with no hop traced", q.r.From, q.r.To)
		}
		if k.Verdict == "delivered" {
			delivered++
		} else {
			dropped++
		}
	}
	if delivered == 0 || dropped == 0 {
		t.Errorf("the cells must include both verdicts: %d delivered, %d dropped", delivered, dropped)
	}
	t.Logf("%d packets traced in the kernel (%d delivered, %d dropped) in %s", len(reqs), delivered, dropped, time.Since(t0).Round(time.Millisecond))
}
