package openstack

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/bothnia/bothnia/spec"
)

// Unmapped is an object of a cloud bothnia left out of the fabric, and why.
type Unmapped struct {
	Cloud  string `json:"cloud"`
	Kind   string `json:"kind"` // network, port, security_group, rule
	ID     string `json:"id"`
	Name   string `json:"name,omitempty"`
	Reason string `json:"reason"`
}

func (u Unmapped) String() string {
	name := u.ID
	if u.ID == "" {
		name = u.Name
	} else if u.Name != "" {
		name = fmt.Sprintf("%s (%s)", u.Name, u.ID)
	}
	return fmt.Sprintf("cloud %s: %s %s: %s", u.Cloud, u.Kind, name, u.Reason)
}

// MirrorPrefix starts the names of the address groups (and the
// descriptions of the rules) bothnia keeps in a foreign cloud: they are
// its own, and never imported as the cloud's.
const MirrorPrefix = "bothnia-"

// Map returns base with each cloud's ports and security groups in it, and
// what it could not map. invs is keyed by site: a site's VMs come from its
// cloud alone (the spec's VMs of that site are replaced); sites without an
// inventory keep the spec's. Networks are matched by their segment (the
// VLAN of the inter-site link), not by UUID: the two clouds each have
// their own network on the same VLAN. Security groups are matched by name
// across clouds; a managed site's cloud gives their rules (a foreign
// cloud's rules are its own Neutron's business), a foreign one only their
// membership.
func Map(base *spec.Spec, invs map[string]*Inventory) (*spec.Spec, []Unmapped) {
	s := clone(base)
	var bad []Unmapped
	sites := make([]string, 0, len(invs))
	for sn := range invs {
		sites = append(sites, sn)
	}
	sort.Strings(sites)

	// Groups: rules from the managed sites' clouds.
	groupFrom := map[string]string{} // group name -> site whose rules it has
	for _, sn := range sites {
		inv := invs[sn]
		names := groupNames(inv, &bad)
		if s.Sites[sn].Foreign() {
			continue
		}
		for _, g := range inv.Groups {
			if names[g.ID] == "" {
				continue
			}
			sg := mapGroup(inv, g, names, &bad)
			if prev, ok := groupFrom[g.Name]; ok {
				if !sameRules(s.SecurityGroup(g.Name), sg) {
					bad = append(bad, Unmapped{inv.Cloud, "security_group", g.ID, g.Name,
						fmt.Sprintf("its rules differ from the group of the same name in site %s's cloud, whose rules are used; make them equal", prev)})
				}
				continue
			}
			groupFrom[g.Name] = sn
			replaceGroup(s, sg)
		}
	}

	// Ports, network by network.
	for _, n := range s.Networks {
		var keep []*spec.VM
		for _, vm := range n.VMs {
			if invs[s.NodeSite(vm.Node)] == nil {
				keep = append(keep, vm)
			}
		}
		n.VMs = keep
	}
	for _, sn := range sites {
		inv := invs[sn]
		names := groupNames(inv, nil)
		nets := map[string]*spec.Network{} // Neutron network ID -> spec network
		for _, nn := range inv.Networks {
			n := networkBySegment(s, nn)
			if n == nil {
				continue // not a fabric network: none of bothnia's business
			}
			nets[nn.ID] = n
		}
		for _, n := range s.Networks {
			found := false
			for _, mapped := range nets {
				found = found || mapped == n
			}
			if !found {
				bad = append(bad, Unmapped{inv.Cloud, "network", "", n.Name,
					fmt.Sprintf("no network of the cloud is on VLAN %d, so site %s has no VMs on it; create it with provider:segmentation_id %d", n.Segment, sn, n.Segment)})
			}
		}
		for _, p := range inv.Ports {
			n := nets[p.NetworkID]
			if n == nil {
				continue
			}
			vm, why := mapPort(s, sn, p, names)
			if why != "" {
				bad = append(bad, Unmapped{inv.Cloud, "port", p.ID, p.Name, why})
				continue
			}
			for _, g := range vm.SecurityGroups {
				if s.SecurityGroup(g) == nil {
					// A foreign site's group no managed cloud defines: it
					// exists for membership (remote groups) only.
					s.SecurityGroups = append(s.SecurityGroups, &spec.SecurityGroup{Name: g, NoDefaultEgress: true})
				}
			}
			n.VMs = append(n.VMs, vm)
		}
	}
	for _, n := range s.Networks {
		sort.Slice(n.VMs, func(i, j int) bool { return n.VMs[i].Name < n.VMs[j].Name })
	}
	sort.Slice(s.SecurityGroups, func(i, j int) bool { return s.SecurityGroups[i].Name < s.SecurityGroups[j].Name })
	return s, bad
}

func clone(s *spec.Spec) *spec.Spec {
	b, err := yaml.Marshal(s)
	if err != nil {
		panic(fmt.Sprintf("openstack: a spec that does not marshal: %v", err))
	}
	var out spec.Spec
	if err := yaml.Unmarshal(b, &out); err != nil {
		panic(fmt.Sprintf("openstack: a spec that does not unmarshal: %v", err))
	}
	return &out
}

// groupNames maps group IDs to names, leaving out names that two groups of
// the cloud share (which one a port means cannot be told) and bothnia's
// own mirrors.
func groupNames(inv *Inventory, bad *[]Unmapped) map[string]string {
	count := map[string]int{}
	for _, g := range inv.Groups {
		count[g.Name]++
	}
	out := map[string]string{}
	for _, g := range inv.Groups {
		switch {
		case count[g.Name] > 1:
			if bad != nil {
				*bad = append(*bad, Unmapped{inv.Cloud, "security_group", g.ID, g.Name,
					fmt.Sprintf("%d groups of the cloud are named %q; groups are matched by name across sites, so rename all but one", count[g.Name], g.Name)})
			}
		case g.Name == "":
			if bad != nil {
				*bad = append(*bad, Unmapped{inv.Cloud, "security_group", g.ID, "", "the group has no name; groups are matched by name across sites, so name it"})
			}
		case spec.NameRule("security group", g.Name) != "":
			if bad != nil {
				*bad = append(*bad, Unmapped{inv.Cloud, "security_group", g.ID, g.Name,
					fmt.Sprintf("the name %s (it is a key in the store and part of firewall set names); rename the group", spec.NameRule("security group", g.Name))})
			}
		default:
			out[g.ID] = g.Name
		}
	}
	return out
}

func mapGroup(inv *Inventory, g Group, names map[string]string, bad *[]Unmapped) *spec.SecurityGroup {
	sg := &spec.SecurityGroup{Name: g.Name, NoDefaultEgress: true}
	rules := append([]Rule(nil), g.Rules...)
	sort.Slice(rules, func(i, j int) bool { return rules[i].ID < rules[j].ID })
	for _, r := range rules {
		if strings.HasPrefix(r.Description, MirrorPrefix) {
			continue // bothnia's own mirror of a remote-group rule
		}
		sr, why := mapRule(r, names)
		if why != "" {
			*bad = append(*bad, Unmapped{inv.Cloud, "rule", r.ID, g.Name, why})
			continue
		}
		sg.Rules = append(sg.Rules, sr)
	}
	return sg
}

func mapRule(r Rule, names map[string]string) (*spec.SGRule, string) {
	sr := &spec.SGRule{Direction: r.Direction, Ethertype: r.Ethertype, Protocol: r.Protocol, RemoteIPPrefix: r.RemoteIPPrefix}
	switch {
	case r.RemoteAddressGroupID != "":
		return nil, "remote address groups are not modelled; the rule is left out, which admits less, never more"
	case r.RemoteGroupID != "":
		name := names[r.RemoteGroupID]
		if name == "" {
			return nil, fmt.Sprintf("its remote group %s is unknown or ambiguous; the rule is left out", r.RemoteGroupID)
		}
		sr.RemoteGroup = name
	}
	switch strings.ToLower(r.Protocol) {
	case "icmp", "ipv6-icmp", "icmpv6", "1", "58":
		sr.ICMPType, sr.ICMPCode = r.PortRangeMin, r.PortRangeMax
	default:
		if r.PortRangeMin != nil {
			lo, hi := *r.PortRangeMin, *r.PortRangeMin
			if r.PortRangeMax != nil {
				hi = *r.PortRangeMax
			}
			sr.PortRange = strconv.Itoa(lo)
			if hi != lo {
				sr.PortRange += "-" + strconv.Itoa(hi)
			}
		}
	}
	return sr, ""
}

func sameRules(a, b *spec.SecurityGroup) bool {
	if a == nil || b == nil {
		return a == b
	}
	ab, _ := yaml.Marshal(a.Rules)
	bb, _ := yaml.Marshal(b.Rules)
	return string(ab) == string(bb)
}

func replaceGroup(s *spec.Spec, g *spec.SecurityGroup) {
	for i, old := range s.SecurityGroups {
		if old.Name == g.Name {
			s.SecurityGroups[i] = g
			return
		}
	}
	s.SecurityGroups = append(s.SecurityGroups, g)
}

func networkBySegment(s *spec.Spec, nn Network) *spec.Network {
	if nn.NetworkType != "vlan" {
		return nil
	}
	seg, err := strconv.Atoi(nn.SegmentationID)
	if err != nil {
		return nil
	}
	for _, n := range s.Networks {
		if n.Segment == seg {
			return n
		}
	}
	return nil
}

// mapPort turns one Neutron port into a VM of the fabric, or says why not.
func mapPort(s *spec.Spec, site string, p Port, names map[string]string) (*spec.VM, string) {
	if strings.HasPrefix(p.DeviceOwner, "network:") {
		return nil, fmt.Sprintf("Neutron's own port (%s), not a VM's", p.DeviceOwner)
	}
	node := hostNode(s, site, p.HostID)
	if p.HostID == "" {
		return nil, "not bound to a host yet (no VM has plugged it); it is mapped once Nova binds it"
	}
	if node == "" {
		var nodes []string
		for _, n := range s.Sites[site].Nodes {
			nodes = append(nodes, n.Name)
		}
		return nil, fmt.Sprintf("bound to host %q, which is no node of site %s (%s); add it to sites.%s.nodes", p.HostID, site, strings.Join(nodes, ", "), site)
	}
	fabric := netip.MustParsePrefix(s.Fabric.CIDR)
	ip := ""
	for _, f := range p.FixedIPs {
		if a, err := netip.ParseAddr(f.IPAddress); err == nil && a.Is4() && fabric.Contains(a) {
			ip = a.String()
			break
		}
	}
	if ip == "" {
		return nil, fmt.Sprintf("no fixed IPv4 address in the fabric %s", fabric)
	}
	vm := &spec.VM{Name: vmName(p), Node: node, IP: ip, MAC: p.MACAddress, PortID: p.ID}
	secured := p.PortSecurityEnabled
	vm.PortSecurity = &secured
	if secured {
		if len(p.SecurityGroups) == 0 {
			return nil, "port security is on but the port has no security group (Neutron drops all its traffic); bothnia's spec cannot say that, so the port is left out"
		}
		for _, id := range p.SecurityGroups {
			if names[id] == "" {
				return nil, fmt.Sprintf("its security group %s is unknown or ambiguous in the cloud", id)
			}
			vm.SecurityGroups = append(vm.SecurityGroups, names[id])
		}
		sort.Strings(vm.SecurityGroups)
	}
	for _, ap := range p.AllowedAddressPairs {
		pair := spec.AddressPair{IP: ap.IPAddress}
		if ap.MACAddress != "" && !strings.EqualFold(ap.MACAddress, p.MACAddress) {
			pair.MAC = ap.MACAddress
		}
		vm.AllowedAddressPairs = append(vm.AllowedAddressPairs, pair)
	}
	return vm, ""
}

// hostNode finds the node a binding host names: the node's name, or the
// host's first label (Nova reports hosts by FQDN on many clouds).
func hostNode(s *spec.Spec, site, host string) string {
	short, _, _ := strings.Cut(host, ".")
	for _, n := range s.Sites[site].Nodes {
		if n.Name == host || n.Name == short {
			return n.Name
		}
	}
	return ""
}

// vmName is the port's name made DNS-safe, or port-<uuid prefix> for an
// unnamed port (the VM's name lives in Nova).
func vmName(p Port) string {
	var b strings.Builder
	for _, r := range strings.ToLower(p.Name) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-':
			b.WriteRune(r)
		case r == '_' || r == ' ' || r == '.':
			b.WriteByte('-')
		}
	}
	name := strings.Trim(b.String(), "-")
	if name == "" || len(name) > 40 {
		return "port-" + strings.SplitN(p.ID, "-", 2)[0]
	}
	return name
}
