package node

import (
	"fmt"

	"github.com/bothnia/bothnia/dataplane"
	"github.com/bothnia/bothnia/firewall"
	"github.com/bothnia/bothnia/plan"
)

// Remove takes everything bothnia made off a host, as switching it back
// to Neutron's agent needs: its links (bridges, uplinks, router and DHCP
// legs), its router and DHCP namespaces (t.Prefix), its routes and NAT,
// then its firewall in either rendering and its rules in Neutron's
// neutron-filter-top. Links go first: a tap left in one of bothnia's
// bridges never passes a frame without its rules. VM taps stay, out of
// any bridge; nothing bothnia did not make is touched. Running it again
// changes nothing.
func Remove(t dataplane.Target) ([]string, error) {
	empty := &plan.Node{Namespaces: []plan.Namespace{{Name: plan.HostNS}}}
	res, err := dataplane.Apply(empty, t)
	var changes []string
	if res != nil {
		changes = res.Changes
	}
	if err != nil {
		return changes, fmt.Errorf("remove: links: %w", err)
	}
	fw, err := firewall.Remove(t.HostNS, nil)
	changes = append(changes, fw...)
	if err != nil {
		return changes, fmt.Errorf("remove: firewall: %w", err)
	}
	return changes, nil
}
