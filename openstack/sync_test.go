package openstack

import (
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
	acts := PlanSync(s, "epouta", inv)
	if len(acts) != 1 || acts[0].Op != "create-rule" || acts[0].agID != "ag1" || acts[0].rule.SecurityGroupID != "g1" {
		t.Fatalf("want one create-rule naming ag1, got %+v", acts)
	}
}
