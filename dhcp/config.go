// Package dhcp is the DHCPv4 server of one site. It answers only the MACs
// the spec places on its own site, with the spec's fixed address, and stays
// silent for every other MAC, so that the two sites' servers, which share
// one L2 segment, never race for a client.
package dhcp

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/bothnia/bothnia/plan"
	"github.com/bothnia/bothnia/spec"
)

// Host is a VM the server answers.
type Host struct {
	IP       netip.Addr
	Hostname string
}

// Route is a classless static route.
type Route struct {
	Dst netip.Prefix
	Via netip.Addr
}

// Config is everything a site's server needs; plain data so that the
// spec today, or the store later, can produce it.
type Config struct {
	Site      string
	ServerIP  netip.Addr
	Mask      net.IPMask
	Router    netip.Addr // invalid: the network has no router
	DNS       []netip.Addr
	Domain    string
	LeaseTime time.Duration
	MTU       int
	Routes    []Route
	Hosts     map[string]Host // by MAC, this site's VMs only
	// Others are the MACs of the other sites' VMs: ignored, but counted
	// apart from strangers.
	Others map[string]bool
}

// ConfigFromSpec builds the configuration of a site's first server.
func ConfigFromSpec(s *spec.Spec, site string) (*Config, error) {
	return ConfigForServer(s, site, "")
}

// ConfigForServer builds the configuration of the site's server at
// address ("" the first). A site's servers differ only in their address:
// the leases are fixed, so either may answer any of the site's VMs.
func ConfigForServer(s *spec.Spec, site, address string) (*Config, error) {
	st := s.Sites[site]
	if st == nil || st.DHCP == nil {
		return nil, fmt.Errorf("dhcp: site %q has no dhcp in the spec", site)
	}
	if address == "" {
		address = st.DHCP.Address
	}
	var addrs []string
	for _, srv := range st.DHCP.Servers() {
		addrs = append(addrs, srv.Address)
	}
	if !slices.Contains(addrs, address) {
		return nil, fmt.Errorf("dhcp: %s is none of site %s's DHCP servers (%s); pass one of theirs", address, site, strings.Join(addrs, ", "))
	}
	fabric := netip.MustParsePrefix(s.Fabric.CIDR)
	c := &Config{
		Site:      site,
		ServerIP:  netip.MustParseAddr(address),
		Mask:      net.CIDRMask(fabric.Bits(), 32),
		Domain:    strings.TrimSuffix(s.Fabric.Domain, "."),
		LeaseTime: time.Duration(s.DHCPOptions.LeaseSeconds) * time.Second,
		MTU:       s.NetworkMTU(),
		Hosts:     map[string]Host{},
		Others:    map[string]bool{},
	}
	if s.Router != nil {
		c.Router = netip.MustParseAddr(s.Router.Address)
	}
	if s.DNS != nil {
		for _, a := range s.DNS.Addresses() {
			c.DNS = append(c.DNS, netip.MustParseAddr(a))
		}
	}
	for _, r := range s.DHCPOptions.Routes {
		c.Routes = append(c.Routes, Route{netip.MustParsePrefix(r.Destination), netip.MustParseAddr(r.Nexthop)})
	}
	n := plan.InfraNetwork(s)
	if n == nil {
		return c, nil
	}
	for _, vm := range n.VMs {
		mac := canonMAC(vm.MAC)
		if s.NodeSite(vm.Node) == site {
			c.Hosts[mac] = Host{IP: netip.MustParseAddr(vm.IP), Hostname: vm.Name}
		} else {
			c.Others[mac] = true
		}
	}
	return c, nil
}

func canonMAC(s string) string {
	hw, err := net.ParseMAC(s)
	if err != nil {
		return strings.ToLower(s)
	}
	return hw.String()
}
