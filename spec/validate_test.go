package spec

import (
	"os"
	"strings"
	"testing"
)

func example(t *testing.T) *Spec {
	t.Helper()
	s, err := Load("../examples/knox-epouta.yaml")
	if err != nil {
		t.Fatalf("the lab example must be valid: %v", err)
	}
	return s
}

func TestExamplesAreValid(t *testing.T) {
	for _, f := range []string{"../examples/knox-epouta.yaml", "../examples/knox-epouta-production.yaml", "../examples/knox-epouta-ha.yaml"} {
		if _, err := Load(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestValidateRejects(t *testing.T) {
	knox := func(s *Spec) *Site { return s.Sites["knox"] }
	mgmt := func(s *Spec) *Network { return s.Networks[0] }
	cases := []struct {
		name   string
		mutate func(*Spec)
		want   string // substring of the error: field and cause
	}{
		{"overlapping pools", func(s *Spec) {
			s.Sites["epouta"].Pools = append(s.Sites["epouta"].Pools, "10.101.0.50-10.101.0.60")
		}, "sites.epouta.pools[1]: 10.101.0.50-10.101.0.60 overlaps sites.epouta.pools[0]"},
		{"pool outside half", func(s *Spec) { knox(s).Pools[0] = "10.101.0.5-10.101.0.9" },
			"sites.knox.pools[0]: 10.101.0.5-10.101.0.9 lies outside knox's half 10.101.128.0/17"},
		{"pool malformed", func(s *Spec) { knox(s).Pools[0] = "10.101.128.9-10.101.128.1" }, "sites.knox.pools[0]: \"10.101.128.9-10.101.128.1\" ends before it starts"},
		{"vm in other half", func(s *Spec) { mgmt(s).VMs[0].IP = "10.101.1.10" },
			"networks[0].vms[0].ip: 10.101.1.10 lies in epouta's half 10.101.0.0/17, but node knox-c1 is in knox"},
		{"vm outside fabric", func(s *Spec) { mgmt(s).VMs[0].IP = "10.102.128.10" }, "networks[0].vms[0].ip: 10.102.128.10 lies outside the fabric 10.101.0.0/16"},
		{"duplicate ip in network", func(s *Spec) { mgmt(s).VMs[1].IP = mgmt(s).VMs[0].IP },
			"networks[0].vms[1].ip: 10.101.128.10 is already used by networks[0].vms[0].ip"},
		{"duplicate mac", func(s *Spec) { mgmt(s).VMs[1].MAC = "FA:16:3E:80:00:0A" }, "networks[0].vms[1].mac: fa:16:3e:80:00:0a is already used by networks[0].vms[0].mac"},
		{"duplicate vm name", func(s *Spec) { s.Networks[1].VMs[0].Name = "knox-vm1" }, "networks[1].vms[0].name: vm name \"knox-vm1\" is also used by networks[0].vms[0].name"},
		{"duplicate node name", func(s *Spec) { knox(s).Nodes[1].Name = "epouta-c1" }, "node name \"epouta-c1\" is also used by"},
		{"duplicate network name", func(s *Spec) { s.Networks[1].Name = "mgmt" }, "networks[1].name: network name \"mgmt\" is also used by networks[0].name"},
		{"duplicate segment", func(s *Spec) { s.Networks[1].Segment = 1203 }, "networks[1].segment: segment 1203 is already used by networks[0]"},
		{"segment out of VLAN range", func(s *Spec) { s.Networks[1].Segment = 5000 }, "networks[1].segment: 5000 is outside 1-4094"},
		{"vm collides with router", func(s *Spec) { s.Networks[0].VMs[2].IP = "10.101.0.1" }, "networks[0].vms[2].ip: 10.101.0.1 is already used by"},
		{"vm collides with dhcp", func(s *Spec) { s.Networks[1].VMs[0].IP = "10.101.128.0" }, "networks[1].vms[0].ip: 10.101.128.0 is already used by sites.knox.dhcp.address"},
		{"dhcp in a pool", func(s *Spec) { s.Sites["epouta"].DHCP.Address = "10.101.0.9" }, "sites.epouta.dhcp.address: 10.101.0.9 lies inside the pool sites.epouta.pools[0]"},
		{"dhcp in other site's pool", func(s *Spec) { s.Sites["epouta"].DHCP.Address = "10.101.130.1" }, "sites.epouta.dhcp.address: 10.101.130.1 lies outside epouta's half"},
		{"router in other site's pool", func(s *Spec) { s.Router.Address = "10.101.200.1" }, "router.address: 10.101.200.1 lies inside the pool sites.knox.pools[0]"},
		{"gateway outside fabric", func(s *Spec) { s.Router.Address = "10.5.0.9" }, "router.address: gateway 10.5.0.9 lies outside the fabric"},
		{"unknown vm node", func(s *Spec) { mgmt(s).VMs[0].Node = "knox-c9" }, "networks[0].vms[0].node: unknown node \"knox-c9\""},
		{"unknown router node", func(s *Spec) { s.Router.Node = "nowhere" }, "router.node: unknown node \"nowhere\""},
		{"unknown router network", func(s *Spec) { s.Router.Network = "nope" }, "router.network: unknown network \"nope\""},
		{"second dhcp on the first's node", func(s *Spec) { knox(s).DHCP.Second = &DHCPServer{Address: "10.101.128.0", Node: "knox-ctl"} },
			"sites.knox.dhcp.second.node: node \"knox-ctl\" already runs the site's first DHCP server"},
		{"second dhcp at a foreign site", func(s *Spec) {
			s.Sites["epouta"].DHCP.Second = &DHCPServer{Address: "10.101.0.2", Node: "epouta-c1"}
		}, "sites.epouta.dhcp.second: site epouta is foreign"},
		{"second dhcp in a pool", func(s *Spec) { knox(s).DHCP.Second = &DHCPServer{Address: "10.101.130.1", Node: "knox-c1"} },
			"sites.knox.dhcp.second.address: 10.101.130.1 lies inside the pool sites.knox.pools[0]"},
		{"second resolver is no dhcp server", func(s *Spec) { s.DNS.Second = "10.101.0.3" },
			"dns.second: 10.101.0.3 is foreign site epouta's DHCP address"},
		{"second resolver twice", func(s *Spec) { s.DNS.Second = s.DNS.Address }, "dns.second: 10.101.128.0 is also dns.address"},
		{"router node and nodes", func(s *Spec) { s.Router.Nodes = []string{"knox-c1", "knox-c2"} }, "router.nodes: router has both node \"knox-ctl\" and nodes"},
		{"router on no node", func(s *Spec) { s.Router.Node = "" }, "router.node: the router needs a node (or nodes: the replicas)"},
		{"replica twice", func(s *Spec) {
			s.Router.Node, s.Router.Nodes, s.Router.External.Device = "", []string{"knox-ctl", "knox-ctl"}, "ex0"
		}, "router.nodes[1]: node \"knox-ctl\" is listed twice"},
		{"foreign replica", func(s *Spec) {
			s.Router.Node, s.Router.Nodes, s.Router.External.Device = "", []string{"knox-ctl", "epouta-c1"}, "ex0"
		}, "router.nodes[1]: node \"epouta-c1\" is at foreign site epouta"},
		{"replicas on a veth pair", func(s *Spec) { s.Router.Node, s.Router.Nodes = "", []string{"knox-ctl", "knox-c1"} },
			"router.external.device: a router with 2 replicas needs a shared external segment"},
		{"ha vni is a segment", func(s *Spec) {
			s.Router.Node, s.Router.Nodes, s.Router.External.Device = "", []string{"knox-ctl", "knox-c1"}, "ex0"
			s.Router.HA = &HA{VNI: 1204}
		}, "router.ha.vni: 1204 is also network sandbox's segment"},
		{"dhcp node in other site", func(s *Spec) { knox(s).DHCP.Node = "epouta-ctl" }, "sites.knox.dhcp.node: node \"epouta-ctl\" belongs to site epouta, not knox"},
		{"malformed fabric cidr", func(s *Spec) { s.Fabric.CIDR = "10.101.0.0/33" }, "fabric.cidr: \"10.101.0.0/33\" is not an IPv4 CIDR"},
		{"host bits", func(s *Spec) { knox(s).CIDR = "10.101.128.1/17" }, "sites.knox.cidr: 10.101.128.1/17 has host bits set; write 10.101.128.0/17"},
		{"overlapping halves", func(s *Spec) { knox(s).CIDR = "10.101.0.0/16" }, "overlaps site"},
		{"malformed mac", func(s *Spec) { mgmt(s).VMs[0].MAC = "fa:16:3e:zz:00:0a" }, "networks[0].vms[0].mac: \"fa:16:3e:zz:00:0a\" is not a MAC address"},
		{"multicast mac", func(s *Spec) { mgmt(s).VMs[0].MAC = "01:16:3e:00:00:0a" }, "is a multicast address"},
		{"malformed ip", func(s *Spec) { mgmt(s).VMs[0].IP = "10.101.128" }, "networks[0].vms[0].ip: \"10.101.128\" is not an IPv4 address"},
		{"external overlaps fabric", func(s *Spec) { s.Router.External.CIDR = "10.101.0.0/24" }, "router.external.cidr: 10.101.0.0/24 overlaps the fabric"},
		{"gw outside external", func(s *Spec) { s.Router.External.Router = "10.6.0.2" }, "router.external.router: 10.6.0.2 lies outside 10.5.0.0/24"},
		{"default route allowed", func(s *Spec) { s.Router.Allow[0].Prefix = "0.0.0.0/0" }, "router.allow[0].prefix: 0.0.0.0/0 is a default route"},
		{"allow inside fabric", func(s *Spec) { s.Router.Allow[0].Prefix = "10.101.3.4" }, "router.allow[0].prefix: 10.101.3.4/32 overlaps the fabric"},
		{"dns not at a dhcp address", func(s *Spec) { s.DNS.Address = "10.101.0.2" }, "dns.address: 10.101.0.2 is no site's DHCP address"},
		{"bad site mode", func(s *Spec) { knox(s).Mode = "rented" }, "sites.knox.mode: \"rented\" is not a mode"},
		{"router at a foreign site", func(s *Spec) { knox(s).Mode = Foreign }, "router.node: node \"knox-ctl\" is at foreign site knox"},
		{"dns at a foreign site", func(s *Spec) { knox(s).Mode = Foreign }, "dns.address: 10.101.128.0 is foreign site knox's DHCP address"},
		{"bad link mode", func(s *Spec) { s.Link.Mode = "gre" }, "link.mode: \"gre\" is not a mode"},
		{"vlan without device", func(s *Spec) { s.Link.Device = "" }, "link.device: VLAN mode needs the parent device"},
		{"bad role", func(s *Spec) { knox(s).Nodes[0].Role = "boss" }, "sites.knox.nodes[0].role: \"boss\" is not a role"},
		{"duplicate underlay", func(s *Spec) { knox(s).Nodes[1].Underlay = "172.30.0.11" }, "sites.knox.nodes[1].underlay: 172.30.0.11 is already used by sites.knox.nodes[0].underlay"},
		// Issue 7: inputs that once panicked, hung or merged projects.
		{"short network id", func(s *Spec) { s.Networks[0].ID = "abc" }, "networks[0].id: \"abc\" is not a Neutron network UUID"},
		{"network id not a uuid", func(s *Spec) { s.Networks[0].ID = "zzzzzzzz-bbbb-cccc-dddd-eeeeeeeeeeee" }, "is not a Neutron network UUID"},
		{"two networks on one bridge", func(s *Spec) {
			s.Networks[0].ID = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
			s.Networks[1].ID = "aaaaaaaa-bbff-cccc-dddd-eeeeeeeeeeee"
		}, "networks[1].id: its bridge brqaaaaaaaa-bb is also networks[0] (mgmt)'s"},
		{"short port id", func(s *Spec) { mgmt(s).VMs[0].PortID = "b839" }, "networks[0].vms[0].port_id: \"b839\" is not a Neutron port UUID"},
		{"duplicate port id", func(s *Spec) {
			mgmt(s).VMs[0].PortID = "b83935a5-3012-4c1e-9a5e-6f0d2c3b4a10"
			s.Networks[1].VMs[0].PortID = "b83935a5-3012-4c1e-9a5e-6f0d2c3b4a10"
		}, "networks[1].vms[0].port_id: b83935a5-3012-4c1e-9a5e-6f0d2c3b4a10 is also networks[0].vms[0] (knox-vm1)'s port ID"},
		{"two ports on one tap", func(s *Spec) {
			mgmt(s).VMs[0].PortID = "b83935a5-3012-4c1e-9a5e-6f0d2c3b4a10"
			mgmt(s).VMs[1].PortID = "b83935a5-30ff-4c1e-9a5e-6f0d2c3b4a10"
		}, "networks[0].vms[1].port_id: its tap tapb83935a5-30 is also networks[0].vms[0] (knox-vm1)'s"},
		{"vm on the network address", func(s *Spec) { s.Networks[1].VMs[0].IP = "10.101.0.0" }, "networks[1].vms[0].ip: 10.101.0.0 is the fabric 10.101.0.0/16's network or broadcast address"},
		{"vm on the broadcast address", func(s *Spec) { mgmt(s).VMs[0].IP = "10.101.255.255" }, "10.101.255.255 is the fabric 10.101.0.0/16's network or broadcast address"},
		{"forwarder not on the allowlist", func(s *Spec) { s.DNS.Forwarders = []string{"9.9.9.9"} }, "dns.forwarders[0]: 9.9.9.9 is not on the router's allowlist"},
		{"protocol name unknown", func(s *Spec) { s.SecurityGroups[0].Rules[0].Protocol = "tcpp" }, "is not a protocol; use a name Neutron knows"},
		// Issue 16: inputs a new user tried that were accepted.
		{"all-zero mac", func(s *Spec) { mgmt(s).VMs[0].MAC = "00:00:00:00:00:00" }, "networks[0].vms[0].mac: 00:00:00:00:00:00 is the all-zero MAC"},
		{"all-zero pair mac", func(s *Spec) {
			mgmt(s).VMs[0].AllowedAddressPairs = []AddressPair{{IP: "192.168.9.1", MAC: "00:00:00:00:00:00"}}
		}, "networks[0].vms[0].allowed_address_pairs[0].mac: \"00:00:00:00:00:00\" is not a unicast MAC"},
		{"vm name of 300 characters", func(s *Spec) { mgmt(s).VMs[0].Name = strings.Repeat("v", 300) }, "networks[0].vms[0].name: vm name \"vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv...\" is 300 characters long; a name has at most 63"},
		{"vm name with shell characters", func(s *Spec) { mgmt(s).VMs[0].Name = "vm;rm -rf /" }, "networks[0].vms[0].name: vm name \"vm;rm -rf /\" has ';' at 2; a DNS label has only letters, digits and -"},
		{"vm name with a space", func(s *Spec) { mgmt(s).VMs[0].Name = "my vm" }, "has ' ' at 2; a DNS label"},
		{"vm name with a leading hyphen", func(s *Spec) { mgmt(s).VMs[0].Name = "-vm" }, "begins or ends with -, which a DNS label may not"},
		{"vm name with a dot", func(s *Spec) { mgmt(s).VMs[0].Name = "vm.knox" }, "has '.' at 2; a DNS label"},
		{"node name with a slash", func(s *Spec) { knox(s).Nodes[0].Name = "knox/c1" }, "node name \"knox/c1\" has '/' at 4"},
		{"network name with a slash", func(s *Spec) { mgmt(s).Name = "mgmt/x" }, "networks[0].name: network name \"mgmt/x\" has '/' at 4; use only letters, digits and - _ ."},
		{"group name with a space", func(s *Spec) { s.SecurityGroups[0].Name = "web servers" }, "security group name \"web servers\" has ' ' at 3"},
		// Issue 16: a pair that shadows another object.
		{"pair covering another vm", func(s *Spec) {
			mgmt(s).VMs[0].AllowedAddressPairs = []AddressPair{{IP: "10.101.0.0/24"}}
		}, "networks[0].vms[0].allowed_address_pairs[0].ip: 10.101.0.0/24 covers 10.101.0.10, vm epouta-vm1 (networks[0].vms[2]): vm knox-vm1 could answer as it; narrow the pair, or set shared: true"},
		{"pair covering the router", func(s *Spec) {
			mgmt(s).VMs[0].AllowedAddressPairs = []AddressPair{{IP: "10.101.0.1"}}
		}, "covers 10.101.0.1, the router's address"},
		{"pair on another vm's address", func(s *Spec) {
			mgmt(s).VMs[0].AllowedAddressPairs = []AddressPair{{IP: mgmt(s).VMs[1].IP}}
		}, "covers " + "10.101.128.11, vm knox-vm2 (networks[0].vms[1])"},
		{"pair covering a dhcp server", func(s *Spec) {
			mgmt(s).VMs[0].AllowedAddressPairs = []AddressPair{{IP: "10.101.128.0"}}
		}, "covers 10.101.128.0, knox's DHCP server"},
		{"pair of everything", func(s *Spec) {
			mgmt(s).VMs[0].AllowedAddressPairs = []AddressPair{{IP: "0.0.0.0/0"}}
		}, "0.0.0.0/0 covers"},
		{"pair with another vm's mac", func(s *Spec) {
			mgmt(s).VMs[0].AllowedAddressPairs = []AddressPair{{IP: "192.168.9.1", MAC: mgmt(s).VMs[1].MAC}}
		}, "allowed_address_pairs[0].mac: fa:16:3e:80:00:0b is vm knox-vm2's MAC"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := example(t)
			c.mutate(s)
			err := s.Validate()
			if err == nil {
				t.Fatalf("want an error containing %q, got none", c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want an error containing\n  %q\ngot\n  %v", c.want, err)
			}
			if !strings.HasPrefix(err.Error(), "spec: ") {
				t.Errorf("errors start with spec: so the operator knows where they come from: %v", err)
			}
		})
	}
}

// A pair that says shared may cover others: a VRRP address two ports
// really share, or a nested cloud's gateway.
func TestSharedPairsMayCoverOthers(t *testing.T) {
	s := example(t)
	vms := s.Networks[0].VMs
	vms[0].AllowedAddressPairs = []AddressPair{{IP: "0.0.0.0/0", Shared: true}, {IP: "192.168.9.1", MAC: vms[1].MAC, Shared: true}}
	vms[1].AllowedAddressPairs = []AddressPair{{IP: "10.101.128.200"}}
	vms[2].AllowedAddressPairs = []AddressPair{{IP: "10.101.128.200"}} // both own the VIP: no port has it
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestDuplicateIPsAcrossNetworksAreAllowed(t *testing.T) {
	s := example(t)
	s.Networks[1].VMs[0].IP = s.Networks[0].VMs[0].IP
	if err := s.Validate(); err != nil {
		t.Fatalf("isolated networks may reuse addresses: %v", err)
	}
}

func TestUnknownFieldsAreRejected(t *testing.T) {
	b, err := os.ReadFile("../examples/knox-epouta.yaml")
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(b), "underlay_mtu:", "underlay_mut:", 1)
	_, err = Parse([]byte(bad))
	if err == nil || !strings.Contains(err.Error(), "underlay_mut") {
		t.Fatalf("a misspelt field must be named in the error, got %v", err)
	}
}

func TestRange(t *testing.T) {
	r, err := ParseRange("10.101.0.4-10.101.127.255")
	if err != nil {
		t.Fatal(err)
	}
	o, _ := ParseRange("10.101.127.255")
	if !r.Overlaps(o) || r.String() != "10.101.0.4-10.101.127.255" {
		t.Fatalf("range %v, single %v", r, o)
	}
	if _, err := ParseRange("10.101.0.4-x"); err == nil {
		t.Fatal("want error")
	}
}

func TestParseRefuses(t *testing.T) {
	b, err := os.ReadFile("../examples/knox-epouta.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ex := string(b)
	cases := []struct{ name, yaml, want string }{
		{"empty file", "", "the file is empty"},
		{"only a comment", "# nothing\n", "the file is empty"},
		{"trailing document", ex + "\n---\nfabric: {name: other}\n", "a second YAML document follows the first"},
		{"typo with suggestion and object", strings.Replace(ex, "security_groups: [mosler]", "securty_groups: [mosler]", 1),
			"unknown field securty_groups in networks[0].vms[0] (knox-vm1); did you mean security_groups?"},
		{"typo at the top", strings.Replace(ex, "networks:", "netwroks:", 1), "unknown field netwroks in the top level; did you mean networks?"},
		{"wrong kind names the field, not a Go type", strings.Replace(ex, "segment: 1203", "segment: twelve", 1), "networks[0].segment: twelve is not a number"},
		{"a list where a mapping goes", "sites: [a, b]\n", "sites: a list is not a mapping"},
		{"not a mapping", "- a\n- b\n", "a spec is a mapping"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.yaml))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want an error containing %q, got %v", c.want, err)
			}
			if strings.Contains(err.Error(), "spec.") && !strings.Contains(err.Error(), "spec: ") || strings.Contains(err.Error(), "type spec") {
				t.Errorf("the message names a Go type: %v", err)
			}
		})
	}
}

// A resolver on the DNS namespace's own loopback needs no route: the
// DNS benchmark's upstream is one.
func TestLoopbackForwarderIsValid(t *testing.T) {
	s := example(t)
	s.DNS.Forwarders = []string{"127.0.0.1:5353"}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestLookups(t *testing.T) {
	s := example(t)
	if vm, n := s.VM("epouta-vm2"); vm == nil || n.Name != "mgmt" || vm.IP != "10.101.0.11" {
		t.Errorf("VM(epouta-vm2) = %+v in %+v", vm, n)
	}
	if vm, n := s.VM("nobody"); vm != nil || n != nil {
		t.Errorf("VM(nobody) = %+v, %+v", vm, n)
	}
	if got := strings.Join(s.NodeNames(), ","); got != "epouta-ctl,epouta-c1,knox-ctl,knox-c1,knox-c2" {
		t.Errorf("NodeNames() = %s", got)
	}
}
