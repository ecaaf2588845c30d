package lab

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"
	"github.com/vishvananda/netns"

	"github.com/bothnia/bothnia/internal/neutrontest"
	"github.com/bothnia/bothnia/openstack"
	"github.com/bothnia/bothnia/store"
)

// hasElement reports whether any nftables set of a namespace holds the
// address (as a key of its own, or as the start of an interval).
func hasElement(t *testing.T, ns string, a netip.Addr) bool {
	t.Helper()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(h)))
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	key := a.AsSlice()
	for _, tb := range tables {
		sets, err := c.GetSets(tb)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range sets {
			els, err := c.GetSetElements(s)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range els {
				if !e.IntervalEnd && bytes.Equal(e.Key, key) {
					return true
				}
			}
		}
	}
	return false
}

// A VM booted in ePouta's Neutron (a real neutron-server; ePouta foreign)
// reaches, through openstack watch, the store and Knox's agent, and shows
// up as a member of its remote group on a Knox node; deleted, it leaves.
func TestNeutronPortReachesTheOtherSite(t *testing.T) {
	servers := neutrontest.Start(t, "epouta")
	raw, err := os.ReadFile("../examples/knox-epouta.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// Knox's VMs stay the spec's; ePouta's come from its cloud.
	raw = bytes.Replace(raw, []byte("    cloud: knox\n"), nil, 1)
	l, s := newAgentLab(t, string(raw), standIn)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cloudsFile, err := neutrontest.CloudsYAML(t.TempDir(), servers)
	if err != nil {
		t.Fatal(err)
	}
	clouds, err := openstack.ConnectSites(ctx, s, openstack.Options{CloudsFile: cloudsFile})
	if err != nil {
		t.Fatal(err)
	}
	seeded, err := neutrontest.Seed(ctx, clouds["epouta"].Network)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := store.Connect(l.storeConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = openstack.Watch(wctx, cli, clouds, 200*time.Millisecond, nil) }()

	knox := l.NodeNS("knox-c1")
	gone := netip.MustParseAddr("10.101.0.10") // the spec's epouta-vm1: no port in the cloud
	waitFor(t, 20*time.Second, "epouta-vm1, which ePouta's cloud does not have, to leave knox-c1's sets", func() bool { return !hasElement(t, knox, gone) })

	addr := netip.MustParseAddr("10.101.0.50")
	t0 := time.Now()
	id, err := seeded.Port(ctx, "epouta-vm9", "epouta-c1", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the new ePouta port to become a member on knox-c1", func() bool { return hasElement(t, knox, addr) })
	t.Logf("Neutron port create -> set element on knox-c1: %s (watch polls every 200ms)", time.Since(t0).Round(time.Millisecond))

	if err := ports.Delete(ctx, clouds["epouta"].Network, id).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the deleted port to leave knox-c1's sets", func() bool { return !hasElement(t, knox, addr) })
}

func waitFor(t *testing.T, within time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
