package guestlab

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/bothnia/bothnia/internal/guest"
)

// arpRequestFor is an ARP request's target address, if the frame is one.
func arpRequestFor(fr guest.Frame) (netip.Addr, bool) {
	_, et := fr.VLANs()
	p := fr.Payload()
	if et != guest.EtherARP || len(p) < 28 || binary.BigEndian.Uint16(p[6:]) != 1 {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4([4]byte(p[24:28])), true
}

// A VM's ARP for a VM the spec knows is answered by its own node: nothing
// about it crosses the fibre. One for an address nobody has floods, to
// the nodes of its network: a broadcast of the other project reaches its
// VM on the other Knox node and no VM of mgmt, on any node.
func TestVLANARPAndBroadcast(t *testing.T) {
	f := fabric(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	known := netip.MustParseAddr("10.101.0.10") // epouta-vm1, on the other site
	before := len(captured(t, f, "knox-c1"))
	out, err := f.VMGuest("knox-vm1").Sh(ctx, fmt.Sprintf("ip -n %[1]s neigh flush all; ip netns exec %[1]s ping -c 1 -W 2 %[2]s; ip -n %[1]s neigh show %[2]s", VMNS("knox-vm1"), known))
	if err != nil || !strings.Contains(out, "fa:16:3e:00:00:0a") {
		t.Fatalf("knox-vm1 did not resolve epouta-vm1: %v\n%s", err, out)
	}
	for _, fr := range captured(t, f, "knox-c1")[before:] {
		if a, ok := arpRequestFor(fr); ok && a == known {
			t.Fatalf("knox-c1 sent an ARP request for %s, a VM the spec knows, over the fibre (from %s)", known, fr.Src())
		}
	}

	// A broadcast of the other project: a capture in every VM, each
	// started and listening before the broadcast goes.
	unknown := "10.101.128.77"
	filter := "arp and host " + unknown
	for vm, node := range f.NodeOf {
		if _, err := f.Guest(node).Sh(ctx, fmt.Sprintf("(timeout 15 ip netns exec %[1]s tcpdump -l -n -i eth0 -c 3 '%[2]s' >/run/bcast-%[1]s.out 2>/run/bcast-%[1]s.err &)", VMNS(vm), filter)); err != nil {
			t.Fatal(err)
		}
	}
	for vm, node := range f.NodeOf {
		if out, err := f.Guest(node).Sh(ctx, fmt.Sprintf("for i in $(seq 100); do grep -q 'listening on' /run/bcast-%[1]s.err && exit 0; sleep 0.1; done; cat /run/bcast-%[1]s.err; exit 1", VMNS(vm))); err != nil {
			t.Fatalf("the capture in %s did not start: %v\n%s", vm, err, out)
		}
	}
	// The kernel asks three times, by broadcast, for the unanswered address.
	_, _ = f.VMGuest("sandbox-vm1").Sh(ctx, fmt.Sprintf("ip netns exec %s ping -c 3 -W 1 %s", VMNS("sandbox-vm1"), unknown))
	time.Sleep(500 * time.Millisecond)
	saw := map[string]bool{}
	var b strings.Builder
	for vm, node := range f.NodeOf {
		out, err := f.Guest(node).Sh(ctx, fmt.Sprintf("pkill -x tcpdump; sleep 0.2; cat /run/bcast-%[1]s.out; rm -f /run/bcast-%[1]s.*", VMNS(vm)))
		if err != nil {
			t.Fatal(err)
		}
		saw[vm] = strings.Contains(out, unknown)
		fmt.Fprintf(&b, "%s: %q\n", vm, strings.TrimSpace(out))
	}
	if !saw["sandbox-vm2"] {
		t.Errorf("sandbox-vm2 (knox-c2) did not see sandbox-vm1's ARP broadcast:\n%s", b.String())
	}
	var leaked []string
	for vm, s := range saw {
		if s && vm != "sandbox-vm1" && vm != "sandbox-vm2" {
			leaked = append(leaked, vm)
		}
	}
	sort.Strings(leaked)
	if len(leaked) > 0 {
		t.Errorf("the other project's broadcast reached %v:\n%s", leaked, b.String())
	}
}
