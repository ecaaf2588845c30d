package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/provider"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/subnets"

	"github.com/bothnia/bothnia/internal/devcloud"
	"github.com/bothnia/bothnia/lab"
	"github.com/bothnia/bothnia/ml2"
	"github.com/bothnia/bothnia/openstack"
	"github.com/bothnia/bothnia/plan"
	"github.com/bothnia/bothnia/spec"
	"github.com/bothnia/bothnia/store"
)

// bindingSpec is one Knox node whose fabric network is bothnia's; its
// ports come from Knox's Neutron.
const bindingSpec = `
fabric: {name: bindbench, cidr: 10.101.0.0/16}
sites:
  knox:
    cloud: knox
    cidr: 10.101.128.0/17
    pools: [10.101.128.1-10.101.255.254]
    nodes:
      - {name: knox-c1, role: compute, underlay: 172.30.0.1}
link: {mode: vxlan}
networks:
  - {name: mgmt, segment: 1203, vms: []}
`

// Binding times, on one Knox node, Nova's boot of a port from its binding
// PUT to ACTIVE (libvirt's wait for network-vif-plugged): a fabric port,
// bound by bothnia's ML2 driver and wired by bothnia's agent, beside a port
// of another network bound by linuxbridge and wired by Neutron's own
// agent on the same node, alternating, runs times each, in one run. It
// starts a real neutron-server (bothnia's driver before linuxbridge),
// MariaDB, RabbitMQ, the linuxbridge agent and a lab of bothnia's agent,
// and removes them all when done.
func Binding(w io.Writer, prefix string, runs int) error {
	if m := devcloud.Missing(true); len(m) > 0 {
		return fmt.Errorf("bench binding: missing %v: run scripts/install-deps.sh as root", m)
	}
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "bothnia-bench-binding-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	py := filepath.Join(dir, "python")
	if err := ml2.Install(py); err != nil {
		return err
	}
	s, err := spec.Parse([]byte(bindingSpec))
	if err != nil {
		return err
	}
	l, err := lab.New(prefix)
	if err != nil {
		return err
	}
	l.Agents, l.StoreHTTP = true, true
	defer l.Down()
	if _, err := l.Up(s, []byte(bindingSpec)); err != nil {
		return fmt.Errorf("bench binding: lab up: %w", err)
	}
	d, err := devcloud.Start(ctx, filepath.Join(dir, "neutron"), devcloud.Options{Agents: true, Mechanisms: []string{"bothnia", "linuxbridge"}, PythonPath: py,
		Conf: fmt.Sprintf("\n[ml2_bothnia]\netcd_endpoints = %s\nphysical_network = %s\n", l.StoreHTTPURL(), devcloud.PhysNet)}, "knox")
	if err != nil {
		return fmt.Errorf("bench binding: neutron: %w", err)
	}
	defer devcloud.Stop(d.Dir)
	clouds := filepath.Join(dir, "clouds.yaml")
	if err := os.WriteFile(clouds, []byte(fmt.Sprintf("clouds:\n  knox:\n    auth_type: none\n    auth: {endpoint: %q, project_id: %s}\n", d.Clouds["knox"].Endpoint, devcloud.ProjectID)), 0o600); err != nil {
		return err
	}
	c, err := openstack.Connect(ctx, "knox", openstack.Options{CloudsFile: clouds})
	if err != nil {
		return err
	}
	cli, err := store.Connect(store.ClientConfig{Endpoints: l.EtcdEndpoints()})
	if err != nil {
		return err
	}
	defer cli.Close()
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		_ = openstack.Watch(wctx, cli, map[string]*openstack.Cloud{"knox": c}, 200*time.Millisecond, nil)
	}()

	// Neutron's agent on the node maps only its own network's physical
	// network, as on a Knox host shared with bothnia.
	node := l.NodeNS("knox-c1")
	for _, a := range [][]string{{"-n", node, "link", "add", "em2", "type", "veth", "peer", "name", "em2p"},
		{"-n", node, "link", "set", "em2", "up"}, {"-n", node, "link", "set", "em2p", "up"}} {
		if out, err := exec.Command("ip", a...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %v: %v: %s", a, err, out)
		}
	}
	if err := d.StartHost(ctx, devcloud.Host{Cloud: "knox", Name: "knox-c1", NS: node, Mappings: "physnet2:em2"}); err != nil {
		return err
	}
	fabric, err := network(ctx, c, "mgmt", "10.101.0.0/16", provider.Segment{NetworkType: "vlan", PhysicalNetwork: devcloud.PhysNet, SegmentationID: 1203})
	if err != nil {
		return err
	}
	other, err := network(ctx, c, "other", "10.202.0.0/16", provider.Segment{NetworkType: "flat", PhysicalNetwork: "physnet2"})
	if err != nil {
		return err
	}

	boot := func(nw [2]string, name, ip, bridge string) (time.Duration, string, error) {
		p, err := ports.Create(ctx, c.Network, ports.CreateOpts{NetworkID: nw[0], Name: name, ProjectID: devcloud.ProjectID,
			FixedIPs: []ports.IP{{SubnetID: nw[1], IPAddress: ip}}}).Extract()
		if err != nil {
			return 0, "", err
		}
		t0 := time.Now()
		bound, err := lab.BindPort(ctx, c, p.ID, "knox-c1", name)
		if err != nil {
			return 0, "", err
		}
		if err := l.PlugVM("knox-c1", name, plan.TapName(p.ID), p.MACAddress, "", bridge); err != nil {
			return 0, "", err
		}
		for time.Since(t0) < 60*time.Second {
			if q, err := ports.Get(ctx, c.Network, p.ID).Extract(); err == nil && q.Status == "ACTIVE" {
				return time.Since(t0), bound.VIFType, nil
			}
			time.Sleep(20 * time.Millisecond)
		}
		return 0, "", fmt.Errorf("bench binding: port %s (%s) not ACTIVE 60 s after its binding PUT", name, p.ID)
	}
	var lb, bn []time.Duration
	for i := 0; i < runs; i++ {
		for k := 0; k < 2; k++ {
			if (i+k)%2 == 0 {
				dur, vif, err := boot(other, fmt.Sprintf("other%d", i), fmt.Sprintf("10.202.0.%d", 10+i), "brq"+other[0][:spec.DeviceIDLen])
				if err != nil {
					return err
				}
				if vif != "bridge" {
					return fmt.Errorf("bench binding: the other network's port was bound as %q, not by linuxbridge", vif)
				}
				lb = append(lb, dur)
			} else {
				dur, vif, err := boot(fabric, fmt.Sprintf("fab%d", i), fmt.Sprintf("10.101.128.%d", 10+i), "")
				if err != nil {
					return err
				}
				if vif != "tap" {
					return fmt.Errorf("bench binding: the fabric port was bound as %q, not by bothnia", vif)
				}
				bn = append(bn, dur)
			}
		}
	}
	fmt.Fprintf(w, "binding PUT -> ACTIVE on one node, %d ports each, alternating\n", runs)
	fmt.Fprintf(w, "%-34s %9s %9s %9s %9s\n", "", "mean", "p50", "min", "max")
	for _, r := range []struct {
		name string
		ds   []time.Duration
	}{{"Neutron's linuxbridge agent", lb}, {"bothnia (ML2 driver + agent)", bn}} {
		st := stats(r.ds)
		fmt.Fprintf(w, "%-34s %9s %9s %9s %9s\n", r.name, st[0], st[1], st[2], st[3])
	}
	fmt.Fprintf(w, "ratio of means (linuxbridge / bothnia): %.2fx\n", float64(stats(lb)[0])/float64(stats(bn)[0]))
	return nil
}

// network creates a network with one subnet (DHCP off) and returns their
// UUIDs.
func network(ctx context.Context, c *openstack.Cloud, name, cidr string, seg provider.Segment) ([2]string, error) {
	n, err := networks.Create(ctx, c.Network, provider.CreateOptsExt{
		CreateOptsBuilder: networks.CreateOpts{Name: name, ProjectID: devcloud.ProjectID}, Segments: []provider.Segment{seg}}).Extract()
	if err != nil {
		return [2]string{}, err
	}
	dhcp := false
	sub, err := subnets.Create(ctx, c.Network, subnets.CreateOpts{NetworkID: n.ID, CIDR: cidr, IPVersion: 4, ProjectID: devcloud.ProjectID, EnableDHCP: &dhcp}).Extract()
	if err != nil {
		return [2]string{}, err
	}
	return [2]string{n.ID, sub.ID}, nil
}

// stats are mean, p50, min and max, rounded to the millisecond.
func stats(ds []time.Duration) [4]time.Duration {
	p50, _, mx := quantiles(ds)
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	r := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	return [4]time.Duration{r(sum / time.Duration(len(ds))), r(p50), r(slices.Min(ds)), r(mx)}
}
