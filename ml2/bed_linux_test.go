package ml2

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/provider"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/subnets"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/bothnia/bothnia/internal/devcloud"
	"github.com/bothnia/bothnia/internal/kerneltest"
	"github.com/bothnia/bothnia/internal/neutrontest"
	"github.com/bothnia/bothnia/lab"
	"github.com/bothnia/bothnia/namespace"
	"github.com/bothnia/bothnia/openstack"
	"github.com/bothnia/bothnia/plan"
	"github.com/bothnia/bothnia/spec"
	"github.com/bothnia/bothnia/store"
)

// install installs the driver as docs/openstack.md tells an operator to,
// with Debian's pip, offline, into a directory of its own that goes first
// on neutron-server's Python path; from a copy of the source, since pip
// leaves its build directories beside it.
func install(t *testing.T) string {
	src, dir := t.TempDir(), t.TempDir()
	for _, d := range []string{src, dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files, _ := filepath.Glob("bothnia_ml2/*.py")
	for _, f := range append(files, "pyproject.toml") {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(src, filepath.Dir(f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command("/usr/bin/python3", "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
		"--target", dir, src).CombinedOutput()
	if err != nil {
		t.Fatalf("pip install the driver: %v\n%s", err, out)
	}
	return dir
}

// knoxYAML is Knox (its ports from its Neutron) and an ePouta whose VMs
// are bothnia's alone: one a member of "web", one not. Knox's Neutron
// knows neither, so its own agent's rules for "web" hold Knox's members
// only.
const knoxYAML = `
fabric: {name: ml2, cidr: 10.101.0.0/16}
sites:
  knox:
    cloud: knox
    cidr: 10.101.128.0/17
    pools: [10.101.128.1-10.101.255.254]
    nodes:
      - {name: knox-c1, role: compute, underlay: 172.30.0.1}
      - {name: knox-c2, role: compute, underlay: 172.30.0.2}
  epouta:
    cidr: 10.101.0.0/17
    pools: [10.101.0.4-10.101.127.255]
    nodes:
      - {name: epouta-c1, role: compute, underlay: 172.30.0.21}
link: {mode: vxlan}
security_groups:
  - name: web
    rules:
      - {direction: ingress, protocol: icmp, remote_group: web}
networks:
  - name: mgmt
    segment: 1203
    vms:
      - {name: ep-member, node: epouta-c1, ip: 10.101.0.10, mac: "fa:16:3e:00:00:0a", security_groups: [web]}
      - {name: ep-other, node: epouta-c1, ip: 10.101.0.11, mac: "fa:16:3e:00:00:0b"}
`

// bed is a Knox: bothnia's lab (its store also on loopback HTTP) and a
// real neutron-server with bothnia's driver before linuxbridge.
type bed struct {
	t      *testing.T
	ctx    context.Context
	l      *lab.Lab
	d      *devcloud.Deployment
	cloud  *openstack.Cloud
	cli    *clientv3.Client
	net    string // the fabric network's UUID in Knox's Neutron
	subnet string
	// Neutron's own network on knox-c1, once neutronAgent started it;
	// shared by the bed's copies for subtests.
	other *otherNet
}

type otherNet struct{ net, subnet string }

func newBed(t *testing.T) *bed {
	kerneltest.RequireRoot(t)
	neutrontest.Require(t, true)
	exe, cleanup, err := kerneltest.BuildBothnia()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cleanup)
	lab.Exe = exe
	lab.StateDir = t.TempDir()
	s, err := spec.Parse([]byte(knoxYAML))
	if err != nil {
		t.Fatal(err)
	}
	l, err := lab.New(kerneltest.Prefix(t))
	if err != nil {
		t.Fatal(err)
	}
	l.Agents, l.StoreHTTP = true, true
	t.Cleanup(func() {
		if _, err := l.Down(); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	if _, err := l.Up(s, []byte(knoxYAML)); err != nil {
		t.Fatalf("lab up: %v", err)
	}
	ctx := context.Background()
	d := neutrontest.Deploy(t, devcloud.Options{Agents: true, Mechanisms: []string{"bothnia", "linuxbridge"}, PythonPath: install(t),
		Conf: fmt.Sprintf("\n[ml2_bothnia]\netcd_endpoints = %s\nphysical_network = %s\npoll_interval = 0.2\n", l.StoreHTTPURL(), devcloud.PhysNet)}, "knox")
	clouds, err := neutrontest.CloudsYAML(t.TempDir(), d.Clouds)
	if err != nil {
		t.Fatal(err)
	}
	c, err := openstack.Connect(ctx, "knox", openstack.Options{CloudsFile: clouds})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := store.Connect(store.ClientConfig{Endpoints: l.EtcdEndpoints()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	b := &bed{t: t, ctx: ctx, l: l, d: d, cloud: c, cli: cli, other: &otherNet{}}
	n, err := networks.Create(ctx, c.Network, provider.CreateOptsExt{
		CreateOptsBuilder: networks.CreateOpts{Name: "mgmt", ProjectID: devcloud.ProjectID},
		Segments:          []provider.Segment{{NetworkType: "vlan", PhysicalNetwork: devcloud.PhysNet, SegmentationID: 1203}},
	}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	dhcp := false
	sub, err := subnets.Create(ctx, c.Network, subnets.CreateOpts{NetworkID: n.ID, CIDR: "10.101.0.0/16", IPVersion: 4, ProjectID: devcloud.ProjectID, EnableDHCP: &dhcp,
		AllocationPools: []subnets.AllocationPool{{Start: "10.101.128.1", End: "10.101.255.254"}}}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	b.net, b.subnet = n.ID, sub.ID
	// Knox's ports reach the store as they do on a real site.
	wctx, stop := context.WithCancel(ctx)
	t.Cleanup(stop)
	go func() {
		_ = openstack.Watch(wctx, cli, map[string]*openstack.Cloud{"knox": c}, 200*time.Millisecond, nil)
	}()
	return b
}

// bind creates a port (in groups, if any are named; Neutron's default
// otherwise) and does Nova's binding PUT; it returns the port as bound.
func (b *bed) bind(name, netID, subnetID, ip, host string, groups ...string) *openstack.Port {
	b.t.Helper()
	opts := ports.CreateOpts{NetworkID: netID, Name: name, ProjectID: devcloud.ProjectID,
		FixedIPs: []ports.IP{{SubnetID: subnetID, IPAddress: ip}}}
	if len(groups) > 0 {
		opts.SecurityGroups = &groups
	}
	p, err := ports.Create(b.ctx, b.cloud.Network, opts).Extract()
	if err != nil {
		b.t.Fatal(err)
	}
	out, err := lab.BindPort(b.ctx, b.cloud, p.ID, host, name)
	if err != nil {
		b.t.Fatal(err)
	}
	return out
}

// tap does the hypervisor's part: the port's tap on the node, its other
// end a VM's eth0 with the port's MAC and address (in a /bits); plugged
// into bridge unless "".
func (b *bed) tap(node string, p *openstack.Port, bridge string, bits int) {
	b.t.Helper()
	cidr := fmt.Sprintf("%s/%d", p.FixedIPs[0].IPAddress, bits)
	if err := b.l.PlugVM(node, p.Name, plan.TapName(p.ID), p.MACAddress, cidr, bridge); err != nil {
		b.t.Fatal(err)
	}
}

// debug is what a failure needs: the store's keys, the agent's log.
func (b *bed) debug() string {
	var out strings.Builder
	if resp, err := b.cli.Get(b.ctx, store.Prefix, clientv3.WithPrefix()); err == nil {
		for _, kv := range resp.Kvs {
			fmt.Fprintf(&out, "%s = %.200s\n", kv.Key, kv.Value)
		}
	}
	if invs, err := openstack.ReadAll(b.ctx, map[string]*openstack.Cloud{"knox": b.cloud}); err == nil {
		rep, err := openstack.Import(b.ctx, b.cli, invs, false)
		fmt.Fprintf(&out, "import: %v\n", err)
		if rep != nil {
			for _, u := range rep.Unmapped {
				fmt.Fprintf(&out, "unmapped: %+v\n", u)
			}
		}
	}
	log, _ := os.ReadFile(b.l.ServiceLog("agent-knox-c1"))
	if len(log) > 3000 {
		log = log[len(log)-3000:]
	}
	out.Write(log)
	return out.String()
}

// mentions are the last lines of the cloud's logs (server, agents) that
// name a port.
func (b *bed) mentions(id string) string {
	logs, _ := filepath.Glob(filepath.Join(b.d.Dir, "log", "*.log"))
	var out []string
	if c := b.d.Clouds["knox"]; c != nil {
		logs = append(logs, c.Log)
	}
	for _, f := range logs {
		data, _ := os.ReadFile(f)
		for _, line := range strings.Split(string(data), "\n") {
			if strings.Contains(line, id) || strings.Contains(line, id[:11]) {
				out = append(out, filepath.Base(f)+": "+line)
			}
		}
	}
	if len(out) > 60 {
		out = out[len(out)-60:]
	}
	return strings.Join(out, "\n")
}

func (b *bed) status(id string) string {
	p, err := ports.Get(b.ctx, b.cloud.Network, id).Extract()
	if err != nil {
		return "error: " + err.Error()
	}
	return p.Status
}

func (b *bed) upKey(node, id string) bool {
	resp, err := b.cli.Get(b.ctx, store.PortUpKey(node, id))
	return err == nil && len(resp.Kvs) == 1
}

// neutronAgent starts Neutron's own linuxbridge agent on knox-c1, as a
// Knox host shared with bothnia runs it: mapping only physnet2 (em2, whose
// far end is the namespace peer2 at 10.202.0.1), where a flat network
// "other" (10.202.0.0/24) stays Neutron's. Once per bed.
func (b *bed) neutronAgent() (netID, subnetID string) {
	b.t.Helper()
	if b.other.net != "" {
		return b.other.net, b.other.subnet
	}
	node, peer := b.l.NodeNS("knox-c1"), b.l.VMNS("peer2")
	if _, err := namespace.Create(peer); err != nil {
		b.t.Fatal(err)
	}
	for _, c := range [][]string{{"-n", node, "link", "add", "em2", "type", "veth", "peer", "name", "eth0", "netns", peer},
		{"-n", node, "link", "set", "em2", "up"}, {"-n", peer, "link", "set", "eth0", "up"},
		{"-n", peer, "addr", "add", "10.202.0.1/24", "dev", "eth0"}} {
		if out, err := exec.Command("ip", c...).CombinedOutput(); err != nil {
			b.t.Fatalf("ip %v: %v: %s", c, err, out)
		}
	}
	if err := b.d.StartHost(b.ctx, devcloud.Host{Cloud: "knox", Name: "knox-c1", NS: node, Mappings: "physnet2:em2"}); err != nil {
		b.t.Fatal(err)
	}
	n, err := networks.Create(b.ctx, b.cloud.Network, provider.CreateOptsExt{
		CreateOptsBuilder: networks.CreateOpts{Name: "other", ProjectID: devcloud.ProjectID},
		Segments:          []provider.Segment{{NetworkType: "flat", PhysicalNetwork: "physnet2"}},
	}).Extract()
	if err != nil {
		b.t.Fatal(err)
	}
	dhcp := false
	sub, err := subnets.Create(b.ctx, b.cloud.Network, subnets.CreateOpts{NetworkID: n.ID, CIDR: "10.202.0.0/24", IPVersion: 4, ProjectID: devcloud.ProjectID, EnableDHCP: &dhcp}).Extract()
	if err != nil {
		b.t.Fatal(err)
	}
	b.other.net, b.other.subnet = n.ID, sub.ID
	return n.ID, sub.ID
}

// boot is a VM's boot as Nova does it on knox-c1: port, binding PUT, tap
// (into bridge unless ""); it returns once the port is ACTIVE, and how
// long that took from the PUT.
func (b *bed) boot(name, netID, subID, ip, bridge string, bits int, groups ...string) (*openstack.Port, time.Duration) {
	b.t.Helper()
	return b.bootOn("knox-c1", name, netID, subID, ip, bridge, bits, groups...)
}

// bootOn is boot on another host.
func (b *bed) bootOn(host, name, netID, subID, ip, bridge string, bits int, groups ...string) (*openstack.Port, time.Duration) {
	b.t.Helper()
	t0 := time.Now()
	p := b.bind(name, netID, subID, ip, host, groups...)
	b.tap(host, p, bridge, bits)
	for time.Since(t0) < 60*time.Second {
		if b.status(p.ID) == "ACTIVE" {
			return p, time.Since(t0)
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.t.Fatalf("%s: %s 60 s after its binding PUT\n%s\n%s", name, b.status(p.ID), b.debug(), b.mentions(p.ID))
	return nil, 0
}
