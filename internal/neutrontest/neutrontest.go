// Package neutrontest starts real Neutron API servers for tests (through
// devcloud): Debian's neutron-server (ML2, no keystone, no message bus) on
// a real MariaDB, one database per cloud, all in a temporary directory and
// stopped on cleanup.
//
// Nothing here mocks Neutron: a request bothnia gets wrong is refused or
// misapplied by the same server code a cloud runs.
package neutrontest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/portsbinding"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/provider"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/groups"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/rules"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/subnets"

	"github.com/bothnia/bothnia/internal/devcloud"
)

// Cloud is one running neutron-server.
type Cloud = devcloud.Cloud

// ProjectID is the project every test object belongs to.
const ProjectID = devcloud.ProjectID

// Require fails under CI (which installs the packages) and skips elsewhere
// when the servers cannot run here; agents: RabbitMQ and the agents too.
func Require(t testing.TB, agents bool) {
	t.Helper()
	missing := devcloud.Missing(agents)
	if len(missing) == 0 {
		return
	}
	msg := "neutron tests need " + strings.Join(missing, ", ") + ": run scripts/install-deps.sh as root"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// Start runs one MariaDB and one neutron-server per name (no agents, no
// message bus), and stops them when the test ends. It takes about 15 s;
// tests share one call per package where they can.
func Start(t testing.TB, names ...string) map[string]*Cloud {
	t.Helper()
	return Deploy(t, devcloud.Options{}, names...).Clouds
}

// Deploy runs a deployment with opts, one neutron-server per name, and
// stops it when the test ends.
func Deploy(t testing.TB, opts devcloud.Options, names ...string) *devcloud.Deployment {
	t.Helper()
	Require(t, opts.Agents)
	dir, err := os.MkdirTemp("", "bothnia-neutron-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = devcloud.Stop(dir)
		os.RemoveAll(dir)
	})
	d, err := devcloud.Start(context.Background(), dir, opts, names...)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// Seeded is what Seed creates in a cloud: the fabric's network on VLAN
// 1203 (physnet1), its 10.101.0.0/16 subnet, and the security group
// mosler admitting TCP 7000 from its own members and ICMP from the fabric.
type Seeded struct {
	Client  *gophercloud.ServiceClient
	Network string
	Subnet  string
	Mosler  string
}

// Seed creates the fabric's objects in one cloud, as its operator would.
func Seed(ctx context.Context, c *gophercloud.ServiceClient) (*Seeded, error) {
	n, err := networks.Create(ctx, c, provider.CreateOptsExt{
		CreateOptsBuilder: networks.CreateOpts{Name: "mosler-mgmt-net", ProjectID: ProjectID},
		Segments:          []provider.Segment{{NetworkType: "vlan", PhysicalNetwork: "physnet1", SegmentationID: 1203}},
	}).Extract()
	if err != nil {
		return nil, fmt.Errorf("create network: %w", err)
	}
	gw := "10.101.0.1"
	sub, err := subnets.Create(ctx, c, subnets.CreateOpts{
		NetworkID: n.ID, Name: "mosler-subnet", CIDR: "10.101.0.0/16", IPVersion: 4, GatewayIP: &gw, ProjectID: ProjectID,
		AllocationPools: []subnets.AllocationPool{{Start: "10.101.0.2", End: "10.101.127.255"}},
	}).Extract()
	if err != nil {
		return nil, fmt.Errorf("create subnet: %w", err)
	}
	g, err := groups.Create(ctx, c, groups.CreateOpts{Name: "mosler", ProjectID: ProjectID}).Extract()
	if err != nil {
		return nil, fmt.Errorf("create group: %w", err)
	}
	for _, r := range []rules.CreateOpts{
		{Direction: "ingress", EtherType: "IPv4", Protocol: "tcp", PortRangeMin: 7000, PortRangeMax: 7000, RemoteGroupID: g.ID},
		{Direction: "ingress", EtherType: "IPv4", Protocol: "icmp", RemoteIPPrefix: "10.101.0.0/16"},
	} {
		r.SecGroupID, r.ProjectID = g.ID, ProjectID
		if _, err := rules.Create(ctx, c, r).Extract(); err != nil {
			return nil, fmt.Errorf("create rule: %w", err)
		}
	}
	return &Seeded{Client: c, Network: n.ID, Subnet: sub.ID, Mosler: g.ID}, nil
}

// Port creates a VM's port in mosler, bound to host ("" leaves it
// unbound, as before Nova plugs it), and returns its UUID.
func (s *Seeded) Port(ctx context.Context, name, host, ip string) (string, error) {
	p, err := ports.Create(ctx, s.Client, portsbinding.CreateOptsExt{
		CreateOptsBuilder: ports.CreateOpts{
			NetworkID: s.Network, Name: name, ProjectID: ProjectID, DeviceOwner: "compute:nova",
			FixedIPs:       []ports.IP{{SubnetID: s.Subnet, IPAddress: ip}},
			SecurityGroups: &[]string{s.Mosler},
		},
		HostID: host,
	}).Extract()
	if err != nil {
		return "", fmt.Errorf("create port %s: %w", name, err)
	}
	return p.ID, nil
}

// CloudsYAML writes a clouds.yaml naming each server (auth_type none) and
// returns its path.
func CloudsYAML(dir string, clouds map[string]*Cloud) (string, error) {
	var b strings.Builder
	b.WriteString("clouds:\n")
	for name, c := range clouds {
		fmt.Fprintf(&b, "  %s:\n    auth_type: none\n    auth: {endpoint: %q, project_id: %s}\n", name, c.Endpoint, ProjectID)
	}
	path := filepath.Join(dir, "clouds.yaml")
	return path, os.WriteFile(path, []byte(b.String()), 0o600)
}
