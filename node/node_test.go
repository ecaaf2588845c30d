package node

import (
	"strings"
	"testing"

	"github.com/bothnia/bothnia/spec"
)

func TestDesiredPlacesServicesAndKeepsOnePlanPerNode(t *testing.T) {
	s, err := spec.Load("../examples/knox-epouta.yaml")
	if err != nil {
		t.Fatal(err)
	}
	fab, err := Desired(s)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, st := range fab.Nodes {
		if st.Plan.Name != st.Name || st.Firewall == nil || st.Renderer != "nftables" {
			t.Errorf("node %s: plan %s, firewall %v, renderer %q", st.Name, st.Plan.Name, st.Firewall != nil, st.Renderer)
		}
		for _, sv := range st.Services {
			got[st.Name] = append(got[st.Name], sv.Name()+" in "+sv.Namespace)
			if !strings.HasPrefix(sv.Namespace, "qdhcp-") {
				t.Errorf("%s runs in %s, not a DHCP namespace", sv.Name(), sv.Namespace)
			}
		}
	}
	// The example: Knox's DHCP and the DNS on knox-ctl, ePouta's DHCP on epouta-ctl.
	if len(got["knox-ctl"]) != 2 || !strings.HasPrefix(got["knox-ctl"][0], "dhcp-knox") || !strings.HasPrefix(got["knox-ctl"][1], "dns") ||
		len(got["epouta-ctl"]) != 1 || !strings.HasPrefix(got["epouta-ctl"][0], "dhcp-epouta") || len(got) != 2 {
		t.Fatalf("services by node: %v", got)
	}
	if _, err := fab.Node("nowhere"); err == nil || !strings.Contains(err.Error(), `no node "nowhere"`) {
		t.Fatalf("unknown node: %v", err)
	}
	if p := fab.Plan(); len(p.Nodes) != len(fab.Nodes) {
		t.Fatalf("plan of %d nodes for %d states", len(p.Nodes), len(fab.Nodes))
	}
}
