package openstack

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/portsbinding"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/portsecurity"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/provider"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/addressgroups"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/groups"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/subnets"
	"github.com/gophercloud/gophercloud/v2/pagination"
)

// Network is a Neutron network with its provider segment.
type Network struct {
	networks.Network
	provider.NetworkProviderExt
}

// Port is a Neutron port with its binding and port security.
type Port struct {
	ports.Port
	portsbinding.PortsBindingExt
	portsecurity.PortSecurityExt
}

// Group is a Neutron security group with its rules. It is decoded here,
// not with gophercloud's types, because a rule's port_range_min of null
// (any) and of 0 (ICMP type 0, echo reply) differ.
type Group struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	ProjectID string `json:"project_id"`
	Revision  int    `json:"revision_number"`
	Rules     []Rule `json:"security_group_rules"`
}

// Rule is one Neutron security group rule.
type Rule struct {
	ID                   string `json:"id"`
	Direction            string `json:"direction"`
	Ethertype            string `json:"ethertype"`
	Protocol             string `json:"protocol"`
	PortRangeMin         *int   `json:"port_range_min"`
	PortRangeMax         *int   `json:"port_range_max"`
	RemoteIPPrefix       string `json:"remote_ip_prefix"`
	RemoteGroupID        string `json:"remote_group_id"`
	RemoteAddressGroupID string `json:"remote_address_group_id"`
	Description          string `json:"description"`
	SecurityGroupID      string `json:"security_group_id"`
}

// Inventory is what one cloud's Neutron holds that bothnia reads.
type Inventory struct {
	Cloud         string
	Networks      []Network
	Subnets       []subnets.Subnet
	Ports         []Port
	Groups        []Group
	AddressGroups []addressgroups.AddressGroup
}

// Read lists everything bothnia maps from one cloud: its networks (a
// provider network may belong to the admin's project), and the ports and
// groups of the account's project when the cloud names one. An admin's
// token sees every project's, and every project has a group named
// "default": matched by name, they would be ambiguous. A request that fails
// (after the client's bounded retries) fails the read and names what was
// being listed: a partial inventory would delete the ports it missed.
func Read(ctx context.Context, c *Cloud) (*Inventory, error) {
	inv := &Inventory{Cloud: c.Name}
	steps := []struct {
		what string
		run  func() error
	}{
		{"networks", func() error {
			return list(ctx, networks.List(c.Network, networks.ListOpts{}), func(p pagination.Page) error {
				var ns []Network
				err := networks.ExtractNetworksInto(p, &ns)
				inv.Networks = append(inv.Networks, ns...)
				return err
			})
		}},
		{"subnets", func() error {
			return list(ctx, subnets.List(c.Network, subnets.ListOpts{}), func(p pagination.Page) error {
				ss, err := subnets.ExtractSubnets(p)
				inv.Subnets = append(inv.Subnets, ss...)
				return err
			})
		}},
		{"ports", func() error {
			return list(ctx, ports.List(c.Network, ports.ListOpts{ProjectID: c.ProjectID}), func(p pagination.Page) error {
				var ps []Port
				err := ports.ExtractPortsInto(p, &ps)
				inv.Ports = append(inv.Ports, ps...)
				return err
			})
		}},
		{"security groups", func() error {
			return list(ctx, groups.List(c.Network, groups.ListOpts{ProjectID: c.ProjectID}), func(p pagination.Page) error {
				var gs []Group
				err := p.(groups.SecGroupPage).ExtractIntoSlicePtr(&gs, "security_groups")
				inv.Groups = append(inv.Groups, gs...)
				return err
			})
		}},
		{"address groups", func() error {
			return list(ctx, addressgroups.List(c.Network, addressgroups.ListOpts{}), func(p pagination.Page) error {
				gs, err := addressgroups.ExtractGroups(p)
				inv.AddressGroups = append(inv.AddressGroups, gs...)
				return err
			})
		}},
	}
	for _, st := range steps {
		if err := st.run(); err != nil {
			return nil, fmt.Errorf("cloud %s: list %s: %w", c.Name, st.what, describe(err))
		}
	}
	inv.sort()
	return inv, nil
}

func list(ctx context.Context, p pagination.Pager, each func(pagination.Page) error) error {
	return p.EachPage(ctx, func(_ context.Context, page pagination.Page) (bool, error) {
		return true, each(page)
	})
}

func (inv *Inventory) sort() {
	sort.Slice(inv.Networks, func(i, j int) bool { return inv.Networks[i].ID < inv.Networks[j].ID })
	sort.Slice(inv.Subnets, func(i, j int) bool { return inv.Subnets[i].ID < inv.Subnets[j].ID })
	sort.Slice(inv.Ports, func(i, j int) bool { return inv.Ports[i].ID < inv.Ports[j].ID })
	sort.Slice(inv.Groups, func(i, j int) bool { return inv.Groups[i].ID < inv.Groups[j].ID })
	sort.Slice(inv.AddressGroups, func(i, j int) bool { return inv.AddressGroups[i].ID < inv.AddressGroups[j].ID })
}

// Revisions is a cheap fingerprint of a cloud: every port's, network's,
// subnet's and group's ID and revision number (a group's revision moves
// when its rules do). Watch reads the whole inventory only when it moved.
func Revisions(ctx context.Context, c *Cloud) (string, error) {
	var b strings.Builder
	for _, res := range []string{"ports", "networks", "subnets", "security-groups", "address-groups"} {
		url := c.Network.ServiceURL(res) + "?fields=id&fields=revision_number"
		var body map[string][]struct {
			ID       string `json:"id"`
			Revision int    `json:"revision_number"`
		}
		if _, err := c.Network.Get(ctx, url, &body, &gophercloud.RequestOpts{OkCodes: []int{200}}); err != nil {
			return "", fmt.Errorf("cloud %s: list %s revisions: %w", c.Name, res, describe(err))
		}
		key := strings.ReplaceAll(res, "-", "_")
		items := body[key]
		sort.Slice(items, func(i, j int) bool { return items[i].ID < items[j].ID })
		fmt.Fprintf(&b, "%s:", key)
		for _, it := range items {
			fmt.Fprintf(&b, "%s=%d,", it.ID, it.Revision)
		}
		b.WriteByte('\n')
	}
	return b.String(), nil
}
