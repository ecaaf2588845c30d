package openstack

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/quotas"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/addressgroups"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/rules"

	"github.com/bothnia/bothnia/spec"
)

// A foreign site's Neutron knows only its own ports: its rule "ingress
// from members of mosler" admits ePouta's members of mosler, not Knox's.
// Sync writes, beside each rule that names a remote group, mirrors that
// admit the group's members at the other sites, and nothing else. The
// cloud stays stock Neutron; bothnia only writes through its API.
//
// Two mechanisms:
//
//   - prefixes (the default): one mirror per prefix of the fewest that
//     cover exactly the members (Cover), as remote_ip_prefix. Every
//     Neutron release and firewall driver enforces remote_ip_prefix.
//   - address groups: one mirror naming an address group bothnia-<group>
//     that holds the members. Only where the cloud's firewall enforces
//     remote address groups: Zed's iptables driver renders such a rule
//     with no source match at all, open to every source (its
//     _convert_sg_rule_to_iptables_args looks at remote_group_id only;
//     bug 2058138), and the API does not say which driver or release a
//     cloud runs, so the operator must say so.

// Mechanisms of sync.
const (
	ByPrefixes      = "prefixes"
	ByAddressGroups = "address-groups"
)

// DefaultRuleQuota is Neutron's default security_group_rule quota per
// project, assumed where the cloud's quota cannot be read.
const DefaultRuleQuota = 100

// SyncOptions choose the mechanism and give each project's rule quota.
type SyncOptions struct {
	Mechanism string // ByPrefixes ("") or ByAddressGroups
	// RuleQuota is each project's security_group_rule quota (-1: no
	// limit); a project not in it has DefaultRuleQuota.
	RuleQuota map[string]int
}

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
	rule      Rule     // create-rule: the mirror to create (by prefix, or RemoteAddressGroupID resolved from ag)
	ruleID    string   // delete-rule
}

func (a SyncAction) String() string {
	s := fmt.Sprintf("%s site %s: %s", a.Op, a.Site, a.Object)
	if a.Detail != "" {
		s += ": " + a.Detail
	}
	return s
}

// QuotaError says, before anything is written, that a project's mirrors
// would take it past its security group rule quota, and what to raise.
// The mirrors of that project are not created; everything else is.
type QuotaError struct {
	Site, Project      string
	Have, Add, Quota   int
	Groups             []string // "mosler: 2 rules x 40 prefixes"
	AddressGroupsExist bool
}

func (e *QuotaError) Error() string {
	return fmt.Sprintf("site %s: project %s: mirroring the other sites' members needs %d more security group rules (%s); with the %d it has, that is %d, over its quota of %d: raise it (openstack quota set --secgroup-rules %d %s), or use the address-groups mechanism where the cloud enforces address groups; no mirror of this project was written",
		e.Site, e.Project, e.Add, strings.Join(e.Groups, "; "), e.Have, e.Have+e.Add, e.Quota, e.Have+e.Add, e.Project)
}

// PlanSync computes the writes that make a foreign site's cloud admit,
// through every rule that names a remote group, that group's members at
// the other sites, by the chosen mechanism, and removes what the other
// mechanism left. It returns nothing when the cloud is in step. A
// *QuotaError comes with the actions that fit.
func PlanSync(s *spec.Spec, site string, inv *Inventory, opts SyncOptions) ([]SyncAction, error) {
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
	byAG := opts.Mechanism == ByAddressGroups
	// Desired mirrors, and (by address groups) the groups they need.
	type mirror struct {
		Rule
		ag     string
		source string // the remote group, for the quota's message
	}
	var want []mirror
	needAG := map[string]Group{} // address group name -> the remote group it stands for
	for _, g := range inv.Groups {
		for _, r := range g.Rules {
			if r.RemoteGroupID == "" || strings.HasPrefix(r.Description, MirrorPrefix) {
				continue
			}
			rg, ok := byID[r.RemoteGroupID]
			if !ok || rg.Name == "" {
				continue
			}
			m := r
			m.ID, m.RemoteGroupID, m.Description = "", "", mirrorRulePrefix+r.ID
			m.SecurityGroupID = g.ID
			if byAG {
				ag := MirrorPrefix + rg.Name
				needAG[ag] = rg
				want = append(want, mirror{m, ag, rg.Name})
				continue
			}
			for _, p := range Cover(memberPrefixes(s, site, rg.Name, r.Ethertype == "IPv6")) {
				pm := m
				pm.RemoteIPPrefix = p.String()
				want = append(want, mirror{pm, "", rg.Name})
			}
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
	rulesOf := map[string]int{}    // project -> rules it holds
	for _, g := range inv.Groups {
		rulesOf[g.ProjectID] += len(g.Rules)
		for _, r := range g.Rules {
			if strings.HasPrefix(r.Description, mirrorRulePrefix) {
				haveRules[ruleKey(r, agName(inv, r.RemoteAddressGroupID))] = r
			}
		}
	}
	wanted := map[string]bool{}
	var creates []SyncAction
	adds := map[string]int{}                // project -> mirrors to create
	perGroup := map[string]map[string]int{} // project -> remote group -> mirrors to create
	for _, m := range want {
		k := ruleKey(m.Rule, m.ag)
		if wanted[k] {
			continue
		}
		wanted[k] = true
		if _, ok := haveRules[k]; ok {
			continue
		}
		proj := byID[m.SecurityGroupID].ProjectID
		adds[proj]++
		if perGroup[proj] == nil {
			perGroup[proj] = map[string]int{}
		}
		perGroup[proj][m.source]++
		from := "address group " + m.ag
		if m.ag == "" {
			from = m.RemoteIPPrefix
		}
		// An address group that exists has its ID now; one this round
		// creates gets it when created.
		creates = append(creates, SyncAction{Op: "create-rule", Site: site, Object: byID[m.SecurityGroupID].Name, ag: m.ag, agID: agByName[m.ag].ID,
			project: proj, rule: m.Rule,
			Detail: fmt.Sprintf("%s %s %s%s from %s (mirrors rule %s)", m.Direction, m.Ethertype, protoName(m.Protocol), portText(m.Rule), from, strings.TrimPrefix(m.Description, mirrorRulePrefix))})
	}
	var deletes []SyncAction
	removes := map[string]int{}
	for _, k := range sortedKeys(haveRules) {
		if !wanted[k] {
			r := haveRules[k]
			removes[byID[r.SecurityGroupID].ProjectID]++
			deletes = append(deletes, SyncAction{Op: "delete-rule", Site: site, Object: byID[r.SecurityGroupID].Name, ruleID: r.ID,
				Detail: fmt.Sprintf("%s (its rule, its members or the mechanism changed)", r.ID)})
		}
	}
	// The quota, counted before anything is written.
	var quotaErrs []error
	over := map[string]bool{}
	for _, proj := range sortedKeys(adds) {
		q, ok := opts.RuleQuota[proj]
		if !ok {
			q = DefaultRuleQuota
		}
		have := rulesOf[proj] - removes[proj]
		if q >= 0 && have+adds[proj] > q {
			over[proj] = true
			var gs []string
			for _, g := range sortedKeys(perGroup[proj]) {
				gs = append(gs, fmt.Sprintf("remote group %s: %d", g, perGroup[proj][g]))
			}
			quotaErrs = append(quotaErrs, &QuotaError{Site: site, Project: proj, Have: have, Add: adds[proj], Quota: q, Groups: gs})
		}
	}
	for _, c := range creates {
		if !over[c.project] {
			acts = append(acts, c)
		}
	}
	acts = append(acts, deletes...)
	for _, name := range sortedKeys(agByName) {
		if _, ok := needAG[name]; !ok {
			acts = append(acts, SyncAction{Op: "delete-address-group", Site: site, Object: name, agID: agByName[name].ID, Detail: "no mirror uses it any more"})
		}
	}
	return acts, errors.Join(quotaErrs...)
}

// RuleQuotas reads the security group rule quota of every project that
// owns a group in the inventory; a project whose quota cannot be read is
// left out (DefaultRuleQuota).
func RuleQuotas(ctx context.Context, c *Cloud, inv *Inventory) map[string]int {
	out := map[string]int{}
	for _, g := range inv.Groups {
		if _, ok := out[g.ProjectID]; ok || g.ProjectID == "" {
			continue
		}
		if q, err := quotas.Get(ctx, c.Network, g.ProjectID).Extract(); err == nil {
			out[g.ProjectID] = q.SecurityGroupRule
		}
	}
	return out
}

// memberPrefixes are the members' addresses of one family as prefixes:
// what Neutron counts as a port's for remote groups (its fixed IP and its
// allowed address pairs), at every site but this one.
func memberPrefixes(s *spec.Spec, site, group string, v6 bool) []netip.Prefix {
	var out []netip.Prefix
	for _, a := range memberAddresses(s, site, group) {
		if p, err := netip.ParsePrefix(a); err == nil && p.Addr().Is6() == v6 {
			out = append(out, p)
		}
	}
	return out
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
				set[cidr(p.IP)] = true
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
	return strings.Join([]string{r.SecurityGroupID, r.Direction, r.Ethertype, r.Protocol, p(r.PortRangeMin), p(r.PortRangeMax), ag, cidr(r.RemoteIPPrefix), r.Description}, "|")
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

// SyncSites runs one round for every foreign site with a cloud: read,
// plan, write. A *QuotaError is returned after the writes that fit.
func SyncSites(ctx context.Context, s *spec.Spec, clouds map[string]*Cloud, mechanism string) (map[string][]SyncAction, error) {
	out := map[string][]SyncAction{}
	var errs []error
	for _, sn := range s.SiteNames() {
		c := clouds[sn]
		if c == nil || !s.Sites[sn].Foreign() {
			continue
		}
		inv, err := Read(ctx, c)
		if err != nil {
			return out, err
		}
		acts, qerr := PlanSync(s, sn, inv, SyncOptions{Mechanism: mechanism, RuleQuota: RuleQuotas(ctx, c, inv)})
		done, err := ApplySync(ctx, c, acts)
		out[sn] = done
		if err != nil {
			return out, err
		}
		errs = append(errs, qerr)
	}
	return out, errors.Join(errs...)
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
			r := a.rule
			opts := rules.CreateOpts{
				Direction: rules.RuleDirection(r.Direction), EtherType: rules.RuleEtherType(r.Ethertype),
				SecGroupID: r.SecurityGroupID, Protocol: rules.RuleProtocol(r.Protocol),
				RemoteIPPrefix: r.RemoteIPPrefix, Description: r.Description, ProjectID: a.project,
			}
			if a.ag != "" {
				if opts.RemoteAddressGroupID = a.agID; opts.RemoteAddressGroupID == "" {
					opts.RemoteAddressGroupID = created[a.ag]
				}
				if opts.RemoteAddressGroupID == "" {
					err = fmt.Errorf("address group %s is neither in the cloud nor created before the rule", a.ag)
					break
				}
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
