package openstack

import (
	"strings"
	"testing"

	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"

	"github.com/bothnia/bothnia/spec"
)

func ptr(i int) *int { return &i }

func exampleSpec(t *testing.T) *spec.Spec {
	t.Helper()
	s, err := spec.Load("../examples/knox-epouta.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s.Sites["epouta"].Mode = spec.Foreign
	return s
}

func vlanNet(id string, seg string) Network {
	n := Network{Network: networks.Network{ID: id}}
	n.NetworkType, n.SegmentationID = "vlan", seg
	return n
}

func port(id, name, net, host, ip string, groups ...string) Port {
	p := Port{Port: ports.Port{ID: id, Name: name, NetworkID: net, MACAddress: "fa:16:3e:00:01:" + id[len(id)-2:],
		FixedIPs: []ports.IP{{IPAddress: ip}}, SecurityGroups: groups, DeviceOwner: "compute:nova"}}
	p.HostID, p.PortSecurityEnabled = host, true
	return p
}

func TestMapRulesAndGroups(t *testing.T) {
	s := exampleSpec(t)
	knox := &Inventory{Cloud: "knox",
		Networks: []Network{vlanNet("n1", "1203"), vlanNet("n2", "999")},
		Groups: []Group{
			{ID: "g1", Name: "mosler", Rules: []Rule{
				{ID: "r1", Direction: "ingress", Ethertype: "IPv4", Protocol: "icmp", PortRangeMin: ptr(0), PortRangeMax: nil},
				{ID: "r2", Direction: "ingress", Ethertype: "IPv4", Protocol: "tcp", PortRangeMin: ptr(7000), PortRangeMax: ptr(7010), RemoteGroupID: "g1"},
				{ID: "r3", Direction: "ingress", Ethertype: "IPv4", Protocol: "tcp", RemoteAddressGroupID: "ag1"},
				{ID: "r4", Direction: "egress", Ethertype: "IPv4"},
			}},
			{ID: "g2", Name: "twin"}, {ID: "g3", Name: "twin"},
		},
		Ports: []Port{
			port("p-00000001", "Knox VM_1", "n1", "knox-c1.uppmax.example", "10.101.128.10", "g1"),
			port("p-00000002", "", "n1", "knox-c2", "10.101.128.11", "g2"),
			port("p-00000003", "off-fabric", "n2", "knox-c2", "10.9.0.1", "g1"),
			{Port: ports.Port{ID: "p-00000004", NetworkID: "n1", DeviceOwner: "network:dhcp"}},
		},
	}
	epouta := &Inventory{Cloud: "epouta",
		Networks: []Network{vlanNet("e1", "1203")},
		Groups:   []Group{{ID: "eg1", Name: "mosler", Rules: []Rule{{ID: "er1", Direction: "ingress", Ethertype: "IPv4", Protocol: "udp"}}}, {ID: "eg2", Name: "csc-only"}},
		Ports:    []Port{port("e-00000001", "", "e1", "epouta-c1", "10.101.0.10", "eg1", "eg2")},
	}
	out, bad := Map(s, map[string]*Inventory{"knox": knox, "epouta": epouta})

	g := out.SecurityGroup("mosler")
	if len(g.Rules) != 3 {
		t.Fatalf("mosler's rules (from the managed site only, the address-group rule left out): %+v", g.Rules)
	}
	if r := g.Rules[0]; r.Protocol != "icmp" || r.ICMPType == nil || *r.ICMPType != 0 || r.ICMPCode != nil {
		t.Errorf("icmp type 0 (echo reply) must stay type 0, not any: %+v", r)
	}
	if r := g.Rules[1]; r.PortRange != "7000-7010" || r.RemoteGroup != "mosler" {
		t.Errorf("port range and remote group: %+v", r)
	}
	if out.SecurityGroup("csc-only") == nil {
		t.Error("a foreign-only group must exist for membership")
	}
	var mgmt *spec.Network
	for _, n := range out.Networks {
		if n.Name == "mgmt" {
			mgmt = n
		}
	}
	names := map[string]*spec.VM{}
	for _, vm := range mgmt.VMs {
		names[vm.Name] = vm
	}
	if vm := names["knox-vm-1"]; vm == nil || vm.Node != "knox-c1" || vm.PortID != "p-00000001" {
		t.Errorf("a port named %q bound by FQDN: %+v (have %v)", "Knox VM_1", vm, names)
	}
	if vm := names["port-e"]; vm == nil || vm.Node != "epouta-c1" || len(vm.SecurityGroups) != 2 {
		t.Errorf("an unnamed ePouta port: %+v (have %v)", vm, names)
	}
	if names["knox-vm1"] != nil || names["epouta-vm1"] != nil {
		t.Error("a cloud site's spec VMs must be replaced by its cloud's")
	}
	want := []string{
		"cloud knox: security_group twin (g2): 2 groups of the cloud are named \"twin\"",
		"cloud knox: rule mosler (r3): remote address groups are not modelled",
		"cloud knox: port p-00000002: its security group g2 is unknown or ambiguous",
		"cloud knox: port p-00000004: Neutron's own port (network:dhcp)",
		"cloud knox: network sandbox: no network of the cloud is on VLAN 1204",
	}
	var got []string
	for _, u := range bad {
		got = append(got, u.String())
	}
	for _, w := range want {
		found := false
		for _, g := range got {
			found = found || strings.HasPrefix(g, w)
		}
		if !found {
			t.Errorf("unmapped lacks %q; got:\n%s", w, strings.Join(got, "\n"))
		}
	}
	for _, g := range got {
		if strings.Contains(g, "off-fabric") {
			t.Errorf("a port of a network outside the fabric is none of bothnia's business: %s", g)
		}
	}
}
