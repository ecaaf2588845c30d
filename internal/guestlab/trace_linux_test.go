package guestlab

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/bothnia/bothnia/trace"
)

// trace --kernel in VLAN mode: each kind of cell of check's matrix, and
// forged packets, sent for real from their VM, traced by nftables in
// every node and router namespace of every guest, judged as the lab
// judges it; the kernel's verdict and path are the model's.
func TestVLANTraceKernelAgreesWithTheModel(t *testing.T) {
	f := fabric(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	stop, err := f.listen(ctx, "trace")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	reqs := []trace.Request{
		{From: "knox-vm1", To: "knox-vm2", Proto: "tcp", Port: 7000},       // within Knox, across nodes
		{From: "knox-vm1", To: "epouta-vm1", Proto: "tcp", Port: 7000},     // across the sites
		{From: "epouta-vm2", To: "knox-vm1", Proto: "tcp", Port: 7001},     // refused by the group, at Knox
		{From: "epouta-vm1", To: "epouta-vm2", Proto: "icmp"},              // on one node
		{From: "knox-vm1", To: "sandbox-vm1", Proto: "icmp"},               // the other project
		{From: "sandbox-vm1", To: "sandbox-vm2", Proto: "tcp", Port: 7000}, // the other project's own group
		{From: "knox-vm2", To: "198.51.100.10", Proto: "tcp", Port: 7000},  // allowlisted, through the router
		{From: "epouta-vm1", To: "203.0.113.99", Proto: "icmp"},            // off the allowlist
		// Forged, as the lab traces them: another address, another MAC
		// (both dropped by anti-spoofing), and the VM's own MAC in a raw
		// frame (delivered: the frame path itself is sound).
		{From: "knox-vm2", To: "knox-vm1", Proto: "tcp", Port: 7000, SrcIP: "10.101.128.99"},
		{From: "knox-vm2", To: "knox-vm1", Proto: "tcp", Port: 7000, SrcMAC: "fa:16:3e:00:00:99"},
		{From: "knox-vm2", To: "knox-vm1", Proto: "tcp", Port: 7000, SrcMAC: "fa:16:3e:80:00:0b"},
	}
	verdicts := map[string]int{}
	for _, r := range reqs {
		tr, err := trace.Run(f.Spec, r)
		if err != nil {
			t.Fatal(err)
		}
		k, err := f.TraceKernel(ctx, tr, r)
		if err != nil {
			t.Fatalf("%+v: %v", r, err)
		}
		verdicts[k.Verdict]++
		if k.Verdict != tr.Verdict {
			t.Errorf("%s %s -> %s port %d: model %s, kernel %s\n%s\nkernel:\n%s", r.Proto, r.From, r.To, r.Port, tr.Verdict, k.Verdict, tr, strings.Join(k.Lines, "\n"))
		}
		if len(k.Disagreements) > 0 {
			t.Errorf("%s %s -> %s port %d: the kernel's path disagrees with the model's stages: %v\nkernel hops %v\n%s", r.Proto, r.From, r.To, r.Port, k.Disagreements, k.Hops, strings.Join(k.Lines, "\n"))
		}
		if k.Verdict == "delivered" && len(k.Hops) == 0 {
			t.Errorf("%s -> %s: delivered with no hop traced", r.From, r.To)
		}
	}
	t.Logf("kernel verdicts: %v", verdicts)
	if verdicts["delivered"] == 0 || verdicts["dropped"] == 0 {
		t.Fatalf("want cells of both verdicts, got %v", verdicts)
	}
}
