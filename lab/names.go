// Package lab builds a whole fabric on one machine: every node, VM, switch
// and the outside world is a network namespace whose name starts with the
// lab's prefix. Nothing in the root namespace is created or changed.
//
// Topology, per lab:
//
//	<p>-sw-<site>    underlay switch of a site: bridge "ul", one port per node
//	                 and one per WAN leg (veth, shaped with tbf to link.rate_mbit)
//	<p>-<node>       a node's own namespace (its "root"): ul0 on the underlay,
//	                 bridges, VXLAN uplinks, VM taps, router and DHCP legs
//	<p>-<node>-q…    the node's router/DHCP namespaces, from the plan
//	<p>-vm-<vm>      a VM: eth0 with the spec's MAC and address
//	<p>-outside      behind the router node: the allowlisted endpoints and
//	                 the lab's blocked ones, on its loopback
//	<p>-xsw          with router replicas (router.external.device): the
//	                 external segment, joining each replica node's device
//	                 and the outside, which is the upstream there
//
// The node plans are applied by the same dataplane code as on real hosts;
// the lab only plays the parts a real site already has (cabling, the
// hypervisor's taps, the upstream network).
package lab

import (
	"fmt"

	"github.com/bothnia/bothnia/internal/devcloud"
	"net/netip"
	"regexp"
	"time"
)

// Lab names a lab on this machine.
type Lab struct {
	Prefix string // every namespace of the lab starts with Prefix + "-"
	// Agents makes Up run the control plane (an embedded etcd and one
	// agent per node namespace) and converge the nodes through it, as
	// real hosts are; without it Up converges each node directly.
	Agents bool
	// Resync is the agents' read-back interval; 0 is 2 s, so that tests
	// see drift repaired quickly (a real host's agent defaults to 10 s).
	Resync time.Duration
	// EtcdMembers is the size of the lab's etcd cluster: 0 or 1 is one
	// embedded member; 3 is the sites' cluster of deploy/README.md
	// (knox-1, knox-2, epouta-1), the agents given every member.
	EtcdMembers int
	// Foreign is how the lab runs a foreign site: ForeignNeutron (real
	// Neutron and its agents), ForeignStandIn (bothnia imitating it), or
	// "" for real Neutron where this machine has the packages.
	Foreign string
	// Cloud is a running Neutron deployment the lab uses for its foreign
	// sites (tests share one); nil starts the lab's own, stopped by Down.
	Cloud *devcloud.Deployment
	// StoreHTTP makes the store answer on a loopback HTTP address too
	// (StoreHTTPURL), as bothnia's ML2 driver in a Neutron reads it.
	StoreHTTP bool

	// NoStateSync leaves the router replicas' conntrackd out: the
	// failover benchmark's peer, replicas that share no connection
	// state, as Neutron's L3 HA routers (keepalived alone).
	NoStateSync bool
	// KeepalivedPeer runs the router replicas as Neutron's L3 HA does:
	// keepalived's VRRP (its defaults as Neutron writes them) chooses the
	// serving replica, the agents only follow (their election off), and
	// no connection state is synchronised. The failover benchmark's peer.
	KeepalivedPeer bool

	// Set by up: how this lab runs its foreign sites, and why where it
	// fell back to the stand-in.
	foreign, foreignWhy string
}

var prefixRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,11}$`)

// New returns a lab for a prefix of 1-12 lowercase letters and digits.
func New(prefix string) (*Lab, error) {
	if !prefixRE.MatchString(prefix) {
		return nil, fmt.Errorf("lab: prefix %q must be 1-12 lowercase letters or digits, starting with a letter", prefix)
	}
	return &Lab{Prefix: prefix}, nil
}

// All is the prefix shared by every namespace of the lab.
func (l *Lab) All() string { return l.Prefix + "-" }

// NodeNS is a node's own namespace.
func (l *Lab) NodeNS(node string) string { return l.Prefix + "-" + node }

// SubPrefix prefixes a node's router and DHCP namespaces.
func (l *Lab) SubPrefix(node string) string { return l.Prefix + "-" + node + "-" }

// SwitchNS is a site's underlay switch.
func (l *Lab) SwitchNS(site string) string { return l.Prefix + "-sw-" + site }

// VMNS is a VM's namespace.
func (l *Lab) VMNS(vm string) string { return l.Prefix + "-vm-" + vm }

// ExternalSwitchNS is the segment router replicas share with the outside.
func (l *Lab) ExternalSwitchNS() string { return l.Prefix + "-xsw" }

// OutsideNS is the world behind the router's mm.
func (l *Lab) OutsideNS() string { return l.Prefix + "-outside" }

// Addresses of the lab's upstream link between the router node and the
// outside (RFC 6598 shared space, which no spec uses for the fabric).
var (
	upstreamNode    = netip.MustParsePrefix("100.64.0.1/30")
	upstreamOutside = netip.MustParsePrefix("100.64.0.2/30")
)

// Device names the lab uses.
const (
	UnderlayDev = "ul0"  // a node's underlay leg
	SwitchBr    = "ul"   // a site switch's bridge
	UpstreamDev = "up0"  // router node -> outside
	OutsideDev  = "ext0" // outside -> router node
	VMDev       = "eth0" // a VM's interface
)
