package openstack

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/subnets"

	"github.com/bothnia/bothnia/spec"
)

// SubnetChange is one subnet whose settings differ from what the fabric
// says its site's half needs: the seed's "neutron subnet-update", derived.
type SubnetChange struct {
	Site     string   `json:"site"`
	Cloud    string   `json:"cloud"`
	Network  string   `json:"network"`
	SubnetID string   `json:"subnet_id"`
	Subnet   string   `json:"subnet"`
	Fields   []string `json:"fields"` // what changes, "field: old -> new", for the operator

	pools   []subnets.AllocationPool
	dns     []string
	dhcp    *bool
	gateway *string
}

func (c SubnetChange) String() string {
	return fmt.Sprintf("~ site %s (cloud %s): subnet %s (%s) of network %s\n    %s",
		c.Site, c.Cloud, c.Subnet, c.SubnetID, c.Network, strings.Join(c.Fields, "\n    "))
}

// PlanSubnets compares each cloud's subnets on the fabric's networks with
// the fabric: allocation pools are the site's own pools (so the two clouds
// never hand out one address twice), the DNS nameserver is the fabric's,
// the gateway is the router, and DHCP is off where bothnia serves it (a
// managed site with a DHCP server) and on at a foreign site that relies on
// its Neutron's. It returns only subnets that differ: after an apply, none.
func PlanSubnets(s *spec.Spec, invs map[string]*Inventory) ([]SubnetChange, error) {
	fabric := netip.MustParsePrefix(s.Fabric.CIDR)
	var out []SubnetChange
	for _, sn := range s.SiteNames() {
		inv := invs[sn]
		if inv == nil {
			continue
		}
		site := s.Sites[sn]
		nets := map[string]*spec.Network{}
		for _, nn := range inv.Networks {
			if n := networkBySegment(s, nn); n != nil {
				nets[nn.ID] = n
			}
		}
		for _, sub := range inv.Subnets {
			n := nets[sub.NetworkID]
			if n == nil || sub.IPVersion != 4 {
				continue
			}
			if p, err := netip.ParsePrefix(sub.CIDR); err != nil || p.Masked() != fabric {
				return nil, fmt.Errorf("cloud %s: subnet %s (%s) of network %s is %s, not the fabric's %s; recreate it as %s",
					inv.Cloud, sub.Name, sub.ID, n.Name, sub.CIDR, fabric, fabric)
			}
			c := SubnetChange{Site: sn, Cloud: inv.Cloud, Network: n.Name, SubnetID: sub.ID, Subnet: sub.Name}
			var pools []subnets.AllocationPool
			for _, ps := range site.Pools {
				r, err := spec.ParseRange(ps)
				if err != nil {
					return nil, err
				}
				pools = append(pools, subnets.AllocationPool{Start: r.First.String(), End: r.Last.String()})
			}
			if !slices.Equal(pools, sub.AllocationPools) {
				c.pools = pools
				c.Fields = append(c.Fields, fmt.Sprintf("allocation_pools: %s -> %s", fmtPools(sub.AllocationPools), fmtPools(pools)))
			}
			if s.DNS != nil && !slices.Equal(sub.DNSNameservers, s.DNS.Addresses()) {
				c.dns = s.DNS.Addresses()
				c.Fields = append(c.Fields, fmt.Sprintf("dns_nameservers: %v -> %v", sub.DNSNameservers, s.DNS.Addresses()))
			}
			if r := s.Router; r != nil && r.Network == n.Name && sub.GatewayIP != r.Address {
				gw := r.Address
				c.gateway = &gw
				c.Fields = append(c.Fields, fmt.Sprintf("gateway_ip: %q -> %s", sub.GatewayIP, gw))
			}
			if site.DHCP != nil {
				want := site.Foreign()
				if sub.EnableDHCP != want {
					c.dhcp = &want
					why := "bothnia serves DHCP at this managed site"
					if want {
						why = "the foreign site's own Neutron serves DHCP"
					}
					c.Fields = append(c.Fields, fmt.Sprintf("enable_dhcp: %t -> %t (%s)", sub.EnableDHCP, want, why))
				}
			}
			if len(c.Fields) > 0 {
				out = append(out, c)
			}
		}
	}
	return out, nil
}

func fmtPools(ps []subnets.AllocationPool) string {
	var parts []string
	for _, p := range ps {
		parts = append(parts, p.Start+"-"+p.End)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// ApplySubnets writes the changes, one subnet update each. It stops at
// the first failure and says how many were written before it.
func ApplySubnets(ctx context.Context, clouds map[string]*Cloud, changes []SubnetChange) error {
	for i, c := range changes {
		cloud := clouds[c.Site]
		if cloud == nil {
			return fmt.Errorf("openstack: site %s has no cloud connected", c.Site)
		}
		opts := subnets.UpdateOpts{AllocationPools: c.pools, GatewayIP: c.gateway, EnableDHCP: c.dhcp}
		if c.dns != nil {
			opts.DNSNameservers = &c.dns
		}
		if _, err := subnets.Update(ctx, cloud.Network, c.SubnetID, opts).Extract(); err != nil {
			return fmt.Errorf("cloud %s: update subnet %s (%s): %w (%d of %d subnets updated before it; run apply again)", cloud.Name, c.Subnet, c.SubnetID, describe(err), i, len(changes))
		}
	}
	return nil
}
