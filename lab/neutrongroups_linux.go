package lab

// A foreign site's security groups in its cloud, made to match the spec.

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/groups"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/rules"
	"github.com/gophercloud/gophercloud/v2/pagination"

	"github.com/bothnia/bothnia/openstack"
	"github.com/bothnia/bothnia/spec"
)

// ensureGroups makes the site's VMs' groups (and the groups their rules
// name) exist with the spec's rules; sync's mirrors are left alone.
func ensureGroups(ctx context.Context, c *openstack.Cloud, s *spec.Spec, site, project string, inv *openstack.Inventory) (map[string]string, error) {
	need := map[string]bool{}
	var add func(string)
	add = func(g string) {
		if need[g] || s.SecurityGroup(g) == nil {
			return
		}
		need[g] = true
		for _, r := range s.SecurityGroup(g).Rules {
			if r.RemoteGroup != "" {
				add(r.RemoteGroup)
			}
		}
	}
	for _, n := range s.Networks {
		for _, vm := range n.VMs {
			if s.NodeSite(vm.Node) == site && vm.Secured() {
				for _, g := range vm.SecurityGroups {
					add(g)
				}
			}
		}
	}
	ids := map[string]string{}
	have := map[string]openstack.Group{}
	for _, g := range inv.Groups {
		if g.ProjectID == project {
			have[g.Name] = g
		}
	}
	names := make([]string, 0, len(need))
	for g := range need {
		names = append(names, g)
	}
	sort.Strings(names)
	for _, name := range names {
		if g, ok := have[name]; ok {
			ids[name] = g.ID
			continue
		}
		g, err := groups.Create(ctx, c.Network, groups.CreateOpts{Name: name, ProjectID: project,
			Description: "the lab's stand-in for a group the cloud's operators made"}).Extract()
		if err != nil && name == "default" {
			// Neutron makes a project's default group itself, the first
			// time the project makes anything.
			g, err = findGroup(ctx, c, project, name)
		}
		if err != nil {
			return nil, fmt.Errorf("lab: cloud %s: create group %s: %w", c.Name, name, err)
		}
		ids[name] = g.ID
		var rs []openstack.Rule
		for _, r := range g.Rules { // Neutron's two default egress rules
			rs = append(rs, openstack.Rule{ID: r.ID, Direction: r.Direction, Ethertype: r.EtherType, Protocol: r.Protocol, RemoteIPPrefix: r.RemoteIPPrefix})
		}
		have[name] = openstack.Group{ID: g.ID, Name: name, Rules: rs}
	}
	for _, name := range names {
		want := map[string]*spec.SGRule{}
		for _, r := range s.SecurityGroup(name).Rules {
			want[specRuleKey(r, ids)] = r
		}
		got := map[string]bool{}
		for _, r := range have[name].Rules {
			if strings.HasPrefix(r.Description, openstack.MirrorPrefix) {
				continue
			}
			k := cloudRuleKey(r, ids)
			if _, ok := want[k]; ok && !got[k] {
				got[k] = true
				continue
			}
			if err := rules.Delete(ctx, c.Network, r.ID).ExtractErr(); err != nil {
				return nil, fmt.Errorf("lab: cloud %s: group %s: delete rule %s: %w", c.Name, name, r.ID, err)
			}
		}
		for k, r := range want {
			if got[k] {
				continue
			}
			eth := r.Ethertype
			if eth == "" {
				eth = "IPv4"
			}
			opts := rules.CreateOpts{Direction: rules.RuleDirection(r.Direction), EtherType: rules.RuleEtherType(eth), SecGroupID: ids[name],
				Protocol: rules.RuleProtocol(ruleProto(r.Protocol)), RemoteIPPrefix: r.RemoteIPPrefix, ProjectID: project}
			if r.RemoteGroup != "" {
				opts.RemoteGroupID = ids[r.RemoteGroup]
			}
			opts.PortRangeMin, opts.PortRangeMax = ruleRange(r)
			if _, err := rules.Create(ctx, c.Network, opts).Extract(); err != nil {
				return nil, fmt.Errorf("lab: cloud %s: group %s: create rule %s: %w", c.Name, name, k, err)
			}
		}
	}
	return ids, nil
}

func ruleProto(p string) string {
	switch p = strings.ToLower(p); p {
	case "any", "0":
		return ""
	}
	return p
}

// ruleRange is a spec rule's port range, or ICMP type and code, as
// Neutron's port_range_min and _max.
func ruleRange(r *spec.SGRule) (int, int) {
	if r.ICMPType != nil {
		code := 0
		if r.ICMPCode != nil {
			code = *r.ICMPCode
		}
		return *r.ICMPType, code
	}
	return r.Ports()
}

func specRuleKey(r *spec.SGRule, ids map[string]string) string {
	eth := r.Ethertype
	if eth == "" {
		eth = "IPv4"
	}
	lo, hi := ruleRange(r)
	return strings.Join([]string{r.Direction, eth, ruleProto(r.Protocol), strconv.Itoa(lo), strconv.Itoa(hi), r.RemoteIPPrefix, ids[r.RemoteGroup]}, "|")
}

func cloudRuleKey(r openstack.Rule, ids map[string]string) string {
	n := func(p *int) int {
		if p == nil {
			return 0
		}
		return *p
	}
	return strings.Join([]string{r.Direction, r.Ethertype, ruleProto(r.Protocol), strconv.Itoa(n(r.PortRangeMin)), strconv.Itoa(n(r.PortRangeMax)), r.RemoteIPPrefix, r.RemoteGroupID}, "|")
}

// findGroup finds a project's group by name.
func findGroup(ctx context.Context, c *openstack.Cloud, project, name string) (*groups.SecGroup, error) {
	var found *groups.SecGroup
	err := groups.List(c.Network, groups.ListOpts{Name: name, ProjectID: project}).EachPage(ctx, func(_ context.Context, p pagination.Page) (bool, error) {
		gs, err := groups.ExtractGroups(p)
		if len(gs) > 0 {
			found = &gs[0]
		}
		return false, err
	})
	if err == nil && found == nil {
		err = fmt.Errorf("no group %s in project %s", name, project)
	}
	return found, err
}
