package guest

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/bothnia/bothnia/internal/kerneltest"
)

// The fixture itself: two guests on one segment make 802.1Q devices with
// Debian's kernel, reach each other over VID 1203, and the capture on the
// host shows the tag; a VLAN-filtering bridge in a guest passes 1203 and
// drops 1204.
func TestTwoGuestsTalkOverVLAN1203(t *testing.T) {
	kerneltest.RequireRoot(t)
	img, err := BuildImage(DefaultCache)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	c, err := Start(ctx, Options{Prefix: kerneltest.Prefix(t), Image: img, Share: t.TempDir(), Guests: []Config{
		{Name: "a", NICs: []NIC{{Segment: "fibre", MAC: "52:54:00:00:00:0a"}}},
		{Name: "b", NICs: []NIC{{Segment: "fibre", MAC: "52:54:00:00:00:0b"}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("two guests booted in %s (%s with building their binaries)", c.Booted.Round(100*time.Millisecond), time.Since(start).Round(100*time.Millisecond))
	t.Cleanup(func() {
		if t.Failed() {
			for _, g := range c.Guests {
				t.Logf("%s console:\n%s", g.Name, g.Serial(20))
			}
		}
		c.Close()
	})
	a, b := c.Guest("a"), c.Guest("b")
	for _, g := range []*Guest{a, b} {
		last := map[*Guest]string{a: "1", b: "2"}[g]
		if _, err := g.Sh(ctx, `
ip link add link em1 name em1.1203 type vlan id 1203
ip link add link em1 name em1.1204 type vlan id 1204
ip addr add 192.0.2.`+last+`/24 dev em1.1203
ip addr add 198.51.100.`+last+`/24 dev em1.1204
ip link set em1.1203 up; ip link set em1.1204 up`); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := a.Sh(ctx, "ping -c 3 -i 0.2 -W 2 192.0.2.2"); err != nil {
		t.Fatalf("VID 1203 between the guests: %v\n%s", err, out)
	}
	// b's em1 into a VLAN-filtering bridge that carries 1203 only.
	if _, err := b.Sh(ctx, `
ip link del em1.1203; ip link del em1.1204
ip link add br0 type bridge vlan_filtering 1
ip link set em1 master br0
bridge vlan add dev em1 vid 1203
bridge vlan add dev br0 vid 1203 self
bridge vlan add dev br0 vid 1204 self
ip link add link br0 name br0.1203 type vlan id 1203
ip link add link br0 name br0.1204 type vlan id 1204
ip addr add 192.0.2.2/24 dev br0.1203
ip addr add 198.51.100.2/24 dev br0.1204
ip link set br0 up; ip link set br0.1203 up; ip link set br0.1204 up`); err != nil {
		t.Fatal(err)
	}
	if out, err := a.Sh(ctx, "ping -c 2 -i 0.2 -W 2 192.0.2.2"); err != nil {
		t.Fatalf("VID 1203 through the filtering bridge: %v\n%s", err, out)
	}
	if out, err := a.Sh(ctx, "ping -c 2 -i 0.2 -W 1 198.51.100.2"); err == nil {
		t.Fatalf("VID 1204 crossed a bridge that does not carry it:\n%s", out)
	}
	frames, err := ReadPcap(a.PcapPath(0))
	if err != nil {
		t.Fatal(err)
	}
	tally := Count(frames)
	t.Logf("a's em1: frames by VID %v", tally.ByVID)
	if tally.ByVID[1203] < 8 || tally.ByVID[1204] == 0 {
		t.Fatalf("the capture of a's em1 has %d frames on VID 1203 and %d on 1204, want at least 8 and some", tally.ByVID[1203], tally.ByVID[1204])
	}
	if out, _ := b.Sh(ctx, "uname -r"); !strings.HasPrefix(out, "6.1.") {
		t.Fatalf("the guest runs kernel %q, want Debian's 6.1", out)
	}
}

// A guest that cannot boot fails Start with qemu's own words, and nothing
// of the cluster is left: no namespace, no qemu.
func TestStartCleansUpWhenAGuestCannotBoot(t *testing.T) {
	kerneltest.RequireRoot(t)
	prefix := kerneltest.Prefix(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	empty := t.TempDir()
	c, err := Start(ctx, Options{Prefix: prefix, Image: Image{Dir: empty}, Share: t.TempDir(), Guests: []Config{
		{Name: "a", NICs: []NIC{{Segment: "fibre", MAC: "52:54:00:00:00:0a"}}},
	}})
	if err == nil {
		c.Close()
		t.Fatal("a guest without a kernel booted")
	}
	if !strings.Contains(err.Error(), "qemu exited") || !strings.Contains(err.Error(), empty) {
		t.Fatalf("the error does not say that qemu exited and why: %v", err)
	}
	out, _ := exec.Command("ip", "netns", "list").Output()
	if strings.Contains(string(out), prefix) {
		t.Fatalf("the cluster's namespace is left:\n%s", out)
	}
	if out, _ := exec.Command("pgrep", "-f", "qemu-system-x86_64 -name a ").Output(); len(out) > 0 {
		t.Fatalf("qemu is left: %s", out)
	}
}
