package openstack

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/addressgroups"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/rules"

	"github.com/bothnia/bothnia/spec"
)

// A foreign site's Neutron knows only its own ports: its rule "ingress
// from members of mosler" admits ePouta's members of mosler, not Knox's.
// Sync keeps, in the foreign cloud, one address group per such remote
// group holding the members at the other sites (bothnia-<group>), and
// beside each rule that names the remote group a mirror naming the address
// group instead. The cloud stays stock Neutron; bothnia only writes through
// its API.

// mirrorRulePrefix starts the description of every rule sync writes, and
// names the rule it mirrors.
const mirrorRulePrefix = MirrorPrefix + "mirror of rule "

// SyncAction is one write sync makes in a foreign cloud.
type SyncAction struct {
	Op     string `json:"op"` // create-address-group, add-addresses, remove-addresses, create-rule, delete-rule, delete-address-group
	Site   string `json:"site"`
	Object string `json:"object"` // what it acts on, by name
	Detail string `json:"detail,omitempty"`

	ag        string   // address group name
	agID      string   // existing address group
	project   string   // of a new address group or rule
	addresses []string // create, add, remove
	rule      Rule     // create-rule: the mirror to create (RemoteAddressGroupID resolved from ag)
	ruleID    string   // delete-rule
}

func (a SyncAction) String() string {
	s := fmt.Sprintf("%s site %s: %s", a.Op, a.Site, a.Object)
	if a.Detail != "" {
		s += ": " + a.Detail
	}
	return s
}

// PlanSync computes the writes that make a foreign site's cloud hold, for
// each of its security groups that its rules use as a remote group, the
// addresses of that group's members at the other sites. It returns nothing
// when the cloud already holds exactly that.
func PlanSync(s *spec.Spec, site string, inv *Inventory) []SyncAction {
	byID := map[string]Group{}
	for _, g := range inv.Groups {
		byID[g.ID] = g
	}
	agByName := map[string]addressgroups.AddressGroup{}
	for _, ag := range inv.AddressGroups {
		if strings.HasPrefix(ag.Name, MirrorPrefix) {
			agByName[ag.Name] = ag
		}
	}
	// Desired mirrors, and the remote groups they need.
	type mirror struct {
		Rule
		ag string
	}
	var want []mirror
	needAG := map[string]Group{} // address group name -> the remote group it stands for
	for _, g := range inv.Groups {
		for _, r := range g.Rules {
			if r.RemoteGroupID == "" || strings.HasPrefix(r.Description, MirrorPrefix) || r.Ethertype != "IPv4" {
				continue
			}
			rg, ok := byID[r.RemoteGroupID]
			if !ok || rg.Name == "" {
				continue
			}
			ag := MirrorPrefix + rg.Name
			needAG[ag] = rg
			m := r
			m.ID, m.RemoteGroupID, m.Description = "", "", mirrorRulePrefix+r.ID
			m.SecurityGroupID = g.ID
			want = append(want, mirror{m, ag})
		}
	}

	var acts []SyncAction
	for _, ag := range sortedKeys(needAG) {
		rg := needAG[ag]
		addrs := memberAddresses(s, site, rg.Name)
		have, ok := agByName[ag]
		if !ok {
			acts = append(acts, SyncAction{Op: "create-address-group", Site: site, Object: ag, ag: ag, project: rg.ProjectID, addresses: addrs,
				Detail: fmt.Sprintf("members of %s at the other sites: %s", rg.Name, joinOrNone(addrs))})
			continue
		}
		cur := canonical(have.Addresses)
		if add := minus(addrs, cur); len(add) > 0 {
			acts = append(acts, SyncAction{Op: "add-addresses", Site: site, Object: ag, agID: have.ID, addresses: add, Detail: joinOrNone(add)})
		}
		if rm := minus(cur, addrs); len(rm) > 0 {
			acts = append(acts, SyncAction{Op: "remove-addresses", Site: site, Object: ag, agID: have.ID, addresses: rm, Detail: joinOrNone(rm)})
		}
	}
	// Rules: create missing mirrors, delete stale ones.
	haveRules := map[string]Rule{} // key -> existing mirror
	for _, g := range inv.Groups {
		for _, r := range g.Rules {
			if strings.HasPrefix(r.Description, mirrorRulePrefix) {
				haveRules[ruleKey(r, agName(inv, r.RemoteAddressGroupID))] = r
			}
		}
	}
	wanted := map[string]bool{}
	for _, m := range want {
		k := ruleKey(m.Rule, m.ag)
		wanted[k] = true
		if _, ok := haveRules[k]; ok {
			continue
		}
		// An address group that exists has its ID now; one this round
		// creates gets it when created.
		acts = append(acts, SyncAction{Op: "create-rule", Site: site, Object: byID[m.SecurityGroupID].Name, ag: m.ag, agID: agByName[m.ag].ID,
			project: byID[m.SecurityGroupID].ProjectID, rule: m.Rule,
			Detail: fmt.Sprintf("%s %s%s from address group %s (mirrors rule %s)", m.Direction, protoName(m.Protocol), portText(m.Rule), m.ag, strings.TrimPrefix(m.Description, mirrorRulePrefix))})
	}
	for _, k := range sortedKeys(haveRules) {
		if !wanted[k] {
			r := haveRules[k]
			acts = append(acts, SyncAction{Op: "delete-rule", Site: site, Object: byID[r.SecurityGroupID].Name, ruleID: r.ID,
				Detail: fmt.Sprintf("%s (its rule is gone or changed)", r.ID)})
		}
	}
	for _, name := range sortedKeys(agByName) {
		if _, ok := needAG[name]; !ok {
			acts = append(acts, SyncAction{Op: "delete-address-group", Site: site, Object: name, agID: agByName[name].ID, Detail: "no rule uses its group any more"})
		}
	}
	return acts
}

// memberAddresses are the addresses Neutron counts as a port's for remote
// groups (its fixed IP and its allowed address pairs) of the group's
// members at every site but this one, as CIDRs.
func memberAddresses(s *spec.Spec, site, group string) []string {
	set := map[string]bool{}
	for _, n := range s.Networks {
		for _, vm := range n.VMs {
			if s.NodeSite(vm.Node) == site || !slices.Contains(vm.SecurityGroups, group) {
				continue
			}
			set[cidr(vm.IP)] = true
			for _, p := range vm.AllowedAddressPairs {
				if c := cidr(p.IP); strings.Contains(c, ".") {
					set[c] = true
				}
			}
		}
	}
	return sortedKeys(set)
}

func cidr(a string) string {
	if p, err := netip.ParsePrefix(a); err == nil {
		return p.Masked().String()
	}
	if ip, err := netip.ParseAddr(a); err == nil {
		return netip.PrefixFrom(ip, ip.BitLen()).String()
	}
	return a
}

func canonical(addrs []string) []string {
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, cidr(a))
	}
	sort.Strings(out)
	return out
}

func minus(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

func agName(inv *Inventory, id string) string {
	for _, ag := range inv.AddressGroups {
		if ag.ID == id {
			return ag.Name
		}
	}
	return id
}

func ruleKey(r Rule, ag string) string {
	p := func(v *int) string {
		if v == nil {
			return "-"
		}
		return fmt.Sprint(*v)
	}
	return strings.Join([]string{r.SecurityGroupID, r.Direction, r.Ethertype, r.Protocol, p(r.PortRangeMin), p(r.PortRangeMax), ag, r.Description}, "|")
}

func protoName(p string) string {
	if p == "" {
		return "any"
	}
	return p
}

func portText(r Rule) string {
	if r.PortRangeMin == nil {
		return ""
	}
	if r.PortRangeMax == nil || *r.PortRangeMax == *r.PortRangeMin {
		return fmt.Sprintf(" %d", *r.PortRangeMin)
	}
	return fmt.Sprintf(" %d-%d", *r.PortRangeMin, *r.PortRangeMax)
}

func joinOrNone(a []string) string {
	if len(a) == 0 {
		return "(none)"
	}
	return strings.Join(a, ", ")
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ApplySync performs the actions in order (address groups before the
// rules that name them, rules deleted before their address groups). It
// stops at the first failure and returns what it did: nothing half-written
// goes unreported.
func ApplySync(ctx context.Context, c *Cloud, acts []SyncAction) ([]SyncAction, error) {
	created := map[string]string{} // address group name -> ID, made this round
	var done []SyncAction
	for _, a := range acts {
		var err error
		switch a.Op {
		case "create-address-group":
			var ag *addressgroups.AddressGroup
			ag, err = addressgroups.Create(ctx, c.Network, addressgroups.CreateOpts{
				Name: a.ag, ProjectID: a.project, Addresses: nonNil(a.addresses),
				Description: "bothnia: members of the security group at the other sites; kept by bothnia openstack sync",
			}).Extract()
			if err == nil {
				created[a.ag] = ag.ID
			}
		case "add-addresses":
			_, err = addressgroups.AddAddresses(ctx, c.Network, a.agID, addressgroups.UpdateAddressesOpts{Addresses: a.addresses}).Extract()
		case "remove-addresses":
			_, err = addressgroups.RemoveAddresses(ctx, c.Network, a.agID, addressgroups.UpdateAddressesOpts{Addresses: a.addresses}).Extract()
		case "create-rule":
			agID := a.agID
			if agID == "" {
				agID = created[a.ag]
			}
			if agID == "" {
				err = fmt.Errorf("address group %s is neither in the cloud nor created before the rule", a.ag)
				break
			}
			r := a.rule
			opts := rules.CreateOpts{
				Direction: rules.RuleDirection(r.Direction), EtherType: rules.RuleEtherType(r.Ethertype),
				SecGroupID: r.SecurityGroupID, Protocol: rules.RuleProtocol(r.Protocol),
				RemoteAddressGroupID: agID, Description: r.Description, ProjectID: a.project,
			}
			if r.PortRangeMin != nil {
				opts.PortRangeMin = *r.PortRangeMin
			}
			if r.PortRangeMax != nil {
				opts.PortRangeMax = *r.PortRangeMax
			}
			_, err = rules.Create(ctx, c.Network, opts).Extract()
		case "delete-rule":
			err = rules.Delete(ctx, c.Network, a.ruleID).ExtractErr()
		case "delete-address-group":
			err = addressgroups.Delete(ctx, c.Network, a.agID).ExtractErr()
		default:
			err = fmt.Errorf("unknown action %q", a.Op)
		}
		if err != nil {
			return done, fmt.Errorf("cloud %s: %s: %w (done before it: %d of %d)", c.Name, a, describe(err), len(done), len(acts))
		}
		done = append(done, a)
	}
	return done, nil
}

func nonNil(a []string) []string {
	if a == nil {
		return []string{}
	}
	return a
}
