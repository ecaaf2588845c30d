package openstack

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/addressgroups"
)

// A mirror rule that is missing beside an address group that exists names
// that group by its ID, with no lookup at apply time; the group's members
// are Knox's, not ePouta's own.
func TestPlanSyncNamesAnExistingAddressGroup(t *testing.T) {
	s := exampleSpec(t)
	inv := &Inventory{Cloud: "epouta",
		Groups: []Group{{ID: "g1", Name: "mosler", ProjectID: "p1", Rules: []Rule{
			{ID: "r1", Direction: "ingress", Ethertype: "IPv4", Protocol: "tcp", PortRangeMin: ptr(7000), PortRangeMax: ptr(7000), RemoteGroupID: "g1", SecurityGroupID: "g1"},
		}}},
		AddressGroups: []addressgroups.AddressGroup{{ID: "ag1", Name: "bothnia-mosler", Addresses: []string{"10.101.128.10/32", "10.101.128.11/32", "192.168.0.0/24"}}},
	}
	acts, err := PlanSync(s, "epouta", inv, SyncOptions{Mechanism: ByAddressGroups})
	if err != nil {
		t.Fatal(err)
	}
	if len(acts) != 1 || acts[0].Op != "create-rule" || acts[0].agID != "ag1" || acts[0].rule.SecurityGroupID != "g1" {
		t.Fatalf("want one create-rule naming ag1, got %+v", acts)
	}
}

// Cover merges what is adjacent or contained and never covers an address
// outside its input.
func TestCover(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"10.101.128.10/32 10.101.128.11/32", "10.101.128.10/31"},
		{"10.101.128.11/32 10.101.128.12/32", "10.101.128.11/32 10.101.128.12/32"},
		{"10.101.128.0/32 10.101.128.1/32 10.101.128.2/32 10.101.128.3/32 10.101.128.4/32", "10.101.128.0/30 10.101.128.4/32"},
		{"192.168.0.0/24 192.168.0.7/32 10.0.0.1/32", "10.0.0.1/32 192.168.0.0/24"},
		{"0.0.0.0/1 128.0.0.0/1", "0.0.0.0/0"},
		{"2001:db8::10/128 2001:db8::11/128 10.0.0.0/32", "10.0.0.0/32 2001:db8::10/127"},
		{"", ""},
	} {
		var in []netip.Prefix
		for _, f := range strings.Fields(c.in) {
			in = append(in, netip.MustParsePrefix(f))
		}
		var got []string
		for _, p := range Cover(in) {
			got = append(got, p.String())
		}
		if strings.Join(got, " ") != c.want {
			t.Errorf("Cover(%s) = %v, want %s", c.in, got, c.want)
		}
	}
}

// Prefix mirrors: one per prefix of the cover, IPv6 rules mirrored with
// the members' IPv6 pairs; the quota counted before writing.
func TestPlanSyncByPrefixes(t *testing.T) {
	s := exampleSpec(t)
	inv := &Inventory{Cloud: "epouta",
		Groups: []Group{{ID: "g1", Name: "mosler", ProjectID: "p1", Rules: []Rule{
			{ID: "r1", Direction: "ingress", Ethertype: "IPv4", Protocol: "tcp", PortRangeMin: ptr(7000), PortRangeMax: ptr(7000), RemoteGroupID: "g1", SecurityGroupID: "g1"},
		}}},
	}
	acts, err := PlanSync(s, "epouta", inv, SyncOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range acts {
		got = append(got, a.Op+" "+a.rule.RemoteIPPrefix)
	}
	// Knox's members: knox-vm1 and knox-vm2 (10.101.128.10, .11) and
	// knox-vm2's pair 192.168.0.0/24.
	if strings.Join(got, ",") != "create-rule 10.101.128.10/31,create-rule 192.168.0.0/24" {
		t.Fatalf("actions %v", got)
	}
	_, err = PlanSync(s, "epouta", inv, SyncOptions{RuleQuota: map[string]int{"p1": 2}})
	var qe *QuotaError
	if !errors.As(err, &qe) || qe.Have != 1 || qe.Add != 2 || qe.Quota != 2 {
		t.Fatalf("quota 2 with 1 rule and 2 mirrors: %v", err)
	}
}
