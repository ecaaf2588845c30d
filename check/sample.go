package check

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/bothnia/bothnia/firewall"
	"github.com/bothnia/bothnia/spec"
)

// Sample keeps of the full matrix the probes that tell apart everything
// the spec distinguishes, so that check stays fast at a hundred VMs.
//
// Two VMs are alike when nothing that decides a verdict differs between
// them: network, node (so site, uplink and every node pair), port
// security, security groups, and which rule prefixes hold their address.
// For every ordered pair of such classes one pair of VMs is probed by
// every protocol and port (so every rule, allowed and denied edge, and
// node pair, both ways), and every VM is probed to and from another of its
// class (so no VM's own wiring goes unprobed); every class probes the
// endpoints. --full probes the whole matrix instead.
func Sample(s *spec.Spec, fw *firewall.Fabric, probes []Probe) []Probe {
	class := classes(s, fw)
	members := map[string][]string{} // class -> VMs, spec order
	for _, t := range VMs(s) {
		members[class[t.Name]] = append(members[class[t.Name]], t.Name)
	}
	keep := map[[2]string]bool{}
	rep := func(c string) string { return members[c][0] }
	var cs []string
	for c := range members {
		cs = append(cs, c)
	}
	slices.Sort(cs)
	for _, a := range cs {
		for _, b := range cs {
			if a != b {
				keep[[2]string{rep(a), rep(b)}] = true
			}
		}
	}
	for _, c := range cs {
		m := members[c]
		for i, vm := range m {
			other := m[(i+1)%len(m)]
			if other != vm {
				keep[[2]string{vm, other}] = true
				keep[[2]string{other, vm}] = true
			}
		}
	}
	var out []Probe
	for _, p := range probes {
		if keep[[2]string{p.From, p.To.Name}] || (!p.To.VM && rep(class[p.From]) == p.From) {
			out = append(out, p)
		}
	}
	return out
}

// classes names each VM's class.
func classes(s *spec.Spec, fw *firewall.Fabric) map[string]string {
	var prefixes []netip.Prefix
	for _, g := range fw.Groups {
		for _, r := range g.Rules {
			if r.RemotePrefix.IsValid() && !slices.Contains(prefixes, r.RemotePrefix) {
				prefixes = append(prefixes, r.RemotePrefix)
			}
		}
	}
	slices.SortFunc(prefixes, func(a, b netip.Prefix) int { return strings.Compare(a.String(), b.String()) })
	out := map[string]string{}
	for _, n := range s.Networks {
		for _, vm := range n.VMs {
			groups := slices.Clone(vm.SecurityGroups)
			slices.Sort(groups)
			ip := netip.MustParseAddr(vm.IP)
			var in []string
			for _, p := range prefixes {
				if p.Contains(ip) {
					in = append(in, p.String())
				}
			}
			out[vm.Name] = fmt.Sprintf("%s|%s|%t|%s|%s|%d", n.Name, vm.Node, vm.Secured(), strings.Join(groups, ","), strings.Join(in, ","), len(vm.AllowedAddressPairs))
		}
	}
	return out
}
