package lab

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/agents"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/dns"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/mtu"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/portsbinding"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/portsecurity"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/provider"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/addressgroups"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/groups"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/subnets"
	"github.com/gophercloud/gophercloud/v2/pagination"

	"github.com/bothnia/bothnia/internal/devcloud"
	"github.com/bothnia/bothnia/openstack"
	"github.com/bothnia/bothnia/plan"
	"github.com/bothnia/bothnia/spec"
)

// A foreign site in the lab is a real cloud: what its operators and Nova
// would have made, the lab makes through Neutron's API from the spec's
// part for that site. Its networks are VLAN segments on devcloud.PhysNet,
// its subnet has the site's pools, DNS server, gateway and routes, its
// security groups the spec's rules (Neutron adds the default egress rules
// itself), its DHCP port the address and MAC the spec places it at, and
// each VM a port with the spec's MAC, address, groups and pairs.

// provision makes the site's cloud hold the spec's objects and returns
// each of the site's VMs' port UUID, and each network's UUID by name.
func provision(ctx context.Context, c *openstack.Cloud, s *spec.Spec, site, project string, netMTU int) (portIDs, netIDs map[string]string, err error) {
	inv, err := openstack.Read(ctx, c)
	if err != nil {
		return nil, nil, err
	}
	mine := func(p string) bool { return p == project }
	infra := plan.InfraNetwork(s)
	dhcp := s.Sites[site].DHCP
	netIDs, subIDs := map[string]string{}, map[string]string{}
	for _, n := range s.Networks {
		here := n == infra && dhcp != nil
		for _, vm := range n.VMs {
			here = here || s.NodeSite(vm.Node) == site
		}
		if !here {
			continue
		}
		id := ""
		for _, x := range inv.Networks {
			if x.Name == n.Name && mine(x.ProjectID) {
				id = x.ID
			}
		}
		if id == "" {
			nw, err := networks.Create(ctx, c.Network, provider.CreateOptsExt{
				CreateOptsBuilder: mtu.CreateOptsExt{CreateOptsBuilder: networks.CreateOpts{Name: n.Name, ProjectID: project}, MTU: netMTU},
				Segments:          []provider.Segment{{NetworkType: "vlan", PhysicalNetwork: devcloud.PhysNet, SegmentationID: n.Segment}},
			}).Extract()
			if err != nil {
				return nil, nil, fmt.Errorf("lab: cloud %s: create network %s: %w", c.Name, n.Name, err)
			}
			id = nw.ID
		}
		netIDs[n.Name] = id
		sub, err := ensureSubnet(ctx, c, s, site, n == infra, id, project, inv)
		if err != nil {
			return nil, nil, err
		}
		subIDs[n.Name] = sub
	}
	groupIDs, err := ensureGroups(ctx, c, s, site, project, inv)
	if err != nil {
		return nil, nil, err
	}
	if dhcp != nil && netIDs[infra.Name] != "" {
		if err := ensureDHCPPort(ctx, c, s, site, project, netIDs[infra.Name], subIDs[infra.Name], inv); err != nil {
			return nil, nil, err
		}
	}
	portIDs = map[string]string{}
	keep := map[string]bool{}
	for _, n := range s.Networks {
		for _, vm := range n.VMs {
			if s.NodeSite(vm.Node) != site {
				continue
			}
			id, err := ensurePort(ctx, c, vm, project, netIDs[n.Name], subIDs[n.Name], groupIDs, inv)
			if err != nil {
				return nil, nil, err
			}
			portIDs[vm.Name], keep[id] = id, true
		}
	}
	// A VM the spec no longer has: Nova deletes its port.
	for _, p := range inv.Ports {
		if mine(p.ProjectID) && strings.HasPrefix(p.DeviceOwner, "compute:") && !keep[p.ID] {
			if err := ports.Delete(ctx, c.Network, p.ID).ExtractErr(); err != nil {
				return nil, nil, fmt.Errorf("lab: cloud %s: delete port %s: %w", c.Name, p.Name, err)
			}
		}
	}
	return portIDs, netIDs, nil
}

func ensureSubnet(ctx context.Context, c *openstack.Cloud, s *spec.Spec, site string, infra bool, netID, project string, inv *openstack.Inventory) (string, error) {
	var pools []subnets.AllocationPool
	for _, p := range s.Sites[site].Pools {
		if r, err := spec.ParseRange(p); err == nil {
			pools = append(pools, subnets.AllocationPool{Start: r.First.String(), End: r.Last.String()})
		}
	}
	var dns []string
	var routes []subnets.HostRoute
	gw := ""
	dhcp := false
	if infra {
		if s.DNS != nil {
			dns = s.DNS.Addresses()
		}
		for _, r := range s.DHCPOptions.Routes {
			routes = append(routes, subnets.HostRoute{DestinationCIDR: r.Destination, NextHop: r.Nexthop})
		}
		if s.Router != nil {
			gw = s.Router.Address
		}
		dhcp = s.Sites[site].DHCP != nil
	}
	for _, x := range inv.Subnets {
		if x.NetworkID == netID {
			if x.EnableDHCP == dhcp && x.GatewayIP == gw && slices.Equal(x.DNSNameservers, dns) &&
				fmt.Sprint(x.HostRoutes) == fmt.Sprint(routes) && fmt.Sprint(x.AllocationPools) == fmt.Sprint(pools) {
				return x.ID, nil
			}
			_, err := subnets.Update(ctx, c.Network, x.ID, subnets.UpdateOpts{EnableDHCP: &dhcp, GatewayIP: &gw, DNSNameservers: &dns,
				HostRoutes: &routes, AllocationPools: pools}).Extract()
			if err != nil {
				return "", fmt.Errorf("lab: cloud %s: update subnet of %s: %w", c.Name, netID, err)
			}
			return x.ID, nil
		}
	}
	opts := subnets.CreateOpts{NetworkID: netID, CIDR: s.Fabric.CIDR, IPVersion: 4, ProjectID: project, EnableDHCP: &dhcp,
		AllocationPools: pools, DNSNameservers: dns, HostRoutes: routes, GatewayIP: &gw}
	if gw == "" {
		opts.GatewayIP = new(string) // none: "" asks Neutron for no gateway
	}
	sub, err := subnets.Create(ctx, c.Network, opts).Extract()
	if err != nil {
		return "", fmt.Errorf("lab: cloud %s: create subnet: %w", c.Name, err)
	}
	return sub.ID, nil
}

// ensureDHCPPort reserves the site's DHCP address (and the MAC the fabric
// gives it) for the DHCP agent, which takes a port reserved this way
// instead of allocating one.
func ensureDHCPPort(ctx context.Context, c *openstack.Cloud, s *spec.Spec, site, project, netID, subID string, inv *openstack.Inventory) error {
	addr := s.Sites[site].DHCP.Address
	for _, p := range inv.Ports {
		if p.NetworkID == netID && p.DeviceOwner == "network:dhcp" {
			for _, ip := range p.FixedIPs {
				if ip.IPAddress == addr {
					return nil
				}
			}
		}
	}
	mac := plan.InfraMAC(plan.DHCPPortID(s, site))
	_, err := ports.Create(ctx, c.Network, ports.CreateOpts{NetworkID: netID, Name: "dhcp-" + site, ProjectID: project,
		DeviceOwner: "network:dhcp", DeviceID: "reserved_dhcp_port", MACAddress: mac,
		FixedIPs: []ports.IP{{SubnetID: subID, IPAddress: addr}}}).Extract()
	if err != nil {
		return fmt.Errorf("lab: cloud %s: reserve the DHCP port %s: %w", c.Name, addr, err)
	}
	return nil
}

// ensurePort makes a VM's port as the spec has it: a port whose MAC or
// address differs is made anew (Neutron cannot change a MAC once bound).
func ensurePort(ctx context.Context, c *openstack.Cloud, vm *spec.VM, project, netID, subID string, groupIDs map[string]string, inv *openstack.Inventory) (string, error) {
	mac := strings.ToLower(vm.MAC)
	if hw, err := net.ParseMAC(vm.MAC); err == nil {
		mac = hw.String()
	}
	var sgs []string
	if vm.Secured() {
		for _, g := range vm.SecurityGroups {
			sgs = append(sgs, groupIDs[g])
		}
	}
	var pairs []ports.AddressPair
	for _, p := range vm.AllowedAddressPairs {
		pairs = append(pairs, ports.AddressPair{IPAddress: p.IP, MACAddress: p.MAC})
	}
	secured := vm.Secured()
	for _, p := range inv.Ports {
		if p.ProjectID != project || p.Name != vm.Name || p.NetworkID != netID {
			continue
		}
		sameIP := len(p.FixedIPs) == 1 && p.FixedIPs[0].IPAddress == vm.IP
		if p.MACAddress == mac && sameIP {
			cur := slices.Clone(p.SecurityGroups)
			slices.Sort(cur)
			want := slices.Clone(sgs)
			slices.Sort(want)
			if !slices.Equal(cur, want) || p.PortSecurityEnabled != secured || len(p.AllowedAddressPairs) != len(pairs) {
				_, err := ports.Update(ctx, c.Network, p.ID, portsecurity.PortUpdateOptsExt{
					UpdateOptsBuilder:   ports.UpdateOpts{SecurityGroups: &sgs, AllowedAddressPairs: &pairs},
					PortSecurityEnabled: &secured}).Extract()
				if err != nil {
					return "", fmt.Errorf("lab: cloud %s: update port %s: %w", c.Name, vm.Name, err)
				}
			}
			return p.ID, nil
		}
		if err := ports.Delete(ctx, c.Network, p.ID).ExtractErr(); err != nil {
			return "", fmt.Errorf("lab: cloud %s: replace port %s: %w", c.Name, vm.Name, err)
		}
	}
	opts := ports.CreateOpts{NetworkID: netID, Name: vm.Name, ProjectID: project, MACAddress: mac,
		FixedIPs: []ports.IP{{SubnetID: subID, IPAddress: vm.IP}}, SecurityGroups: &sgs, AllowedAddressPairs: pairs}
	// The VM's name is its host name in the cloud's DNS integration, as
	// Nova sets dns_name from the instance's name.
	p, err := ports.Create(ctx, c.Network, portsecurity.PortCreateOptsExt{
		CreateOptsBuilder: dns.PortCreateOptsExt{CreateOptsBuilder: opts, DNSName: vm.Name}, PortSecurityEnabled: &secured}).Extract()
	if err != nil {
		return "", fmt.Errorf("lab: cloud %s: create port %s: %w", c.Name, vm.Name, err)
	}
	return p.ID, nil
}

// deviceID is the instance UUID Nova would give the VM.
func deviceID(vm string) string {
	h := sha256.Sum256([]byte("instance/" + vm))
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// bind is Nova's binding PUT: the port goes to the host, owned by the
// instance.
func bind(ctx context.Context, c *openstack.Cloud, portID, host, vm string) error {
	var p openstack.Port
	if err := ports.Get(ctx, c.Network, portID).ExtractInto(&p); err != nil {
		return err
	}
	if p.DeviceOwner == "compute:nova" && p.DeviceID == deviceID(vm) && p.HostID == host {
		return nil
	}
	_, err := BindPort(ctx, c, portID, host, vm)
	return err
}

// BindPort is Nova's binding PUT for a VM's port: host, device_owner
// compute:nova and the VM's device_id. It returns the port as bound (its
// vif_type says which mechanism driver bound it).
func BindPort(ctx context.Context, c *openstack.Cloud, portID, host, vm string) (*openstack.Port, error) {
	owner, id := "compute:nova", deviceID(vm)
	var out openstack.Port
	if err := ports.Update(ctx, c.Network, portID, portsbinding.UpdateOptsExt{
		UpdateOptsBuilder: ports.UpdateOpts{DeviceOwner: &owner, DeviceID: &id}, HostID: &host}).ExtractInto(&out); err != nil {
		return nil, fmt.Errorf("lab: cloud %s: bind port of %s to %s: %w", c.Name, vm, host, err)
	}
	return &out, nil
}

// cleanProject reads (and, if del, deletes) what the lab's project holds
// in a cloud, and returns its networks' UUIDs.
func cleanProject(ctx context.Context, c *openstack.Cloud, project string, del bool) ([]string, error) {
	inv, err := openstack.Read(ctx, c)
	if err != nil {
		return nil, err
	}
	var nets []string
	for _, n := range inv.Networks {
		if n.ProjectID == project {
			nets = append(nets, n.ID)
		}
	}
	if !del {
		return nets, nil
	}
	var errs []string
	note := func(what string, err error) {
		if err != nil {
			errs = append(errs, what+": "+err.Error())
		}
	}
	for _, p := range inv.Ports {
		if p.ProjectID == project || slices.Contains(nets, p.NetworkID) {
			note("port "+p.Name, ports.Delete(ctx, c.Network, p.ID).ExtractErr())
		}
	}
	for _, g := range inv.Groups {
		if g.ProjectID == project {
			note("group "+g.Name, groups.Delete(ctx, c.Network, g.ID).ExtractErr())
		}
	}
	for _, ag := range inv.AddressGroups {
		if ag.ProjectID == project {
			note("address group "+ag.Name, addressgroups.Delete(ctx, c.Network, ag.ID).ExtractErr())
		}
	}
	for _, id := range nets {
		note("network "+id, networks.Delete(ctx, c.Network, id).ExtractErr())
	}
	if len(errs) > 0 {
		return nets, fmt.Errorf("lab: cloud %s: clean project %s: %s", c.Name, project, strings.Join(errs, "; "))
	}
	return nets, nil
}

// scheduleDHCP hands each of the site's networks to the DHCP agent of the
// site's DHCP node, as an operator does (neutron dhcp-agent-network-add):
// Neutron schedules a network only when a port or subnet changes while an
// agent is alive, and the lab makes them before its agents start.
func scheduleDHCP(ctx context.Context, c *openstack.Cloud, host string, netIDs map[string]string) error {
	var id string
	err := agents.List(c.Network, agents.ListOpts{Host: host, AgentType: "DHCP agent"}).EachPage(ctx, func(_ context.Context, p pagination.Page) (bool, error) {
		as, err := agents.ExtractAgents(p)
		if len(as) > 0 {
			id = as[0].ID
		}
		return false, err
	})
	if err != nil || id == "" {
		return fmt.Errorf("lab: cloud %s: no DHCP agent on %s: %v", c.Name, host, err)
	}
	hosted := map[string]bool{}
	if nets, err := agents.ListDHCPNetworks(ctx, c.Network, id).Extract(); err == nil {
		for _, n := range nets {
			hosted[n.ID] = true
		}
	}
	for name, nid := range netIDs {
		if hosted[nid] {
			continue
		}
		if err := agents.ScheduleDHCPNetwork(ctx, c.Network, id, agents.ScheduleDHCPNetworkOpts{NetworkID: nid}).ExtractErr(); err != nil {
			return fmt.Errorf("lab: cloud %s: schedule network %s to the DHCP agent on %s: %w", c.Name, name, host, err)
		}
	}
	return nil
}

// waitDHCP waits until the site's DHCP port is ACTIVE (its agent has
// wired it and runs dnsmasq for the network): before that a VM's
// discover goes unanswered.
func waitDHCP(ctx context.Context, c *openstack.Cloud, addr string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		var status string
		err := ports.List(c.Network, ports.ListOpts{DeviceOwner: "network:dhcp", FixedIPs: []ports.FixedIPOpts{{IPAddress: addr}}}).EachPage(ctx, func(_ context.Context, p pagination.Page) (bool, error) {
			ps, err := ports.ExtractPorts(p)
			for _, x := range ps {
				status = x.Status
			}
			return false, err
		})
		if err == nil && status == "ACTIVE" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lab: cloud %s: the DHCP port %s is %q after %s (err %v); see the DHCP agent's log in the lab's neutron/log", c.Name, addr, status, within, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}
