package ml2

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/portsbinding"
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

// The Python unit tests, with the Python neutron-server runs.
func TestPythonUnits(t *testing.T) {
	if _, err := exec.LookPath("/usr/bin/python3"); err != nil {
		t.Skip("no /usr/bin/python3")
	}
	cmd := exec.Command("/usr/bin/python3", "-m", "unittest", "-v", "tests/test_fabric.py")
	cmd.Env = append(os.Environ(), "PYTHONPATH=.")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("python unit tests: %v\n%s", err, out)
	}
}

// install puts the driver where neutron-server's Python finds it and its
// entry point, as pip install would: the package and a dist-info naming
// neutron.ml2.mechanism_drivers = bothnia.
func install(t *testing.T) string {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	src, err := filepath.Abs("bothnia_ml2")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(src, filepath.Join(dir, "bothnia_ml2")); err != nil {
		t.Fatal(err)
	}
	info := filepath.Join(dir, "bothnia_ml2-0.1.0.dist-info")
	files := map[string]string{
		"METADATA":         "Metadata-Version: 2.1\nName: bothnia-ml2\nVersion: 0.1.0\n",
		"entry_points.txt": "[neutron.ml2.mechanism_drivers]\nbothnia = bothnia_ml2.driver:BothniaMechanismDriver\n",
		"top_level.txt":    "bothnia_ml2\n",
	}
	if err := os.MkdirAll(info, 0o755); err != nil {
		t.Fatal(err)
	}
	for f, c := range files {
		if err := os.WriteFile(filepath.Join(info, f), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

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
link: {mode: vxlan}
networks:
  - {name: mgmt, segment: 1203, vms: []}
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
}

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
	b := &bed{t: t, ctx: ctx, l: l, d: d, cloud: c, cli: cli}
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

// bind creates a port and does Nova's binding PUT; it returns the port as
// bound.
func (b *bed) bind(name, netID, subnetID, ip, host string) *openstack.Port {
	b.t.Helper()
	p, err := ports.Create(b.ctx, b.cloud.Network, ports.CreateOpts{NetworkID: netID, Name: name, ProjectID: devcloud.ProjectID,
		FixedIPs: []ports.IP{{SubnetID: subnetID, IPAddress: ip}}}).Extract()
	if err != nil {
		b.t.Fatal(err)
	}
	owner, dev := "compute:nova", "11111111-2222-3333-4444-"+fmt.Sprintf("%012d", len(name))
	var out openstack.Port
	if err := ports.Update(b.ctx, b.cloud.Network, p.ID, portsbinding.UpdateOptsExt{
		UpdateOptsBuilder: ports.UpdateOpts{DeviceOwner: &owner, DeviceID: &dev}, HostID: &host}).ExtractInto(&out); err != nil {
		b.t.Fatal(err)
	}
	return &out
}

// tap does the hypervisor's part: the port's tap on the node, its other
// end a VM's eth0 with the port's MAC; plugged into bridge unless "".
func (b *bed) tap(node string, p *openstack.Port, bridge string) {
	b.t.Helper()
	vm := b.l.VMNS(p.Name)
	if _, err := namespace.Create(vm); err != nil {
		b.t.Fatal(err)
	}
	nodeNS := b.l.NodeNS(node)
	tap := plan.TapName(p.ID)
	cmds := [][]string{
		{"-n", nodeNS, "link", "add", tap, "type", "veth", "peer", "name", "eth0", "netns", vm},
		{"-n", vm, "link", "set", "eth0", "address", p.MACAddress, "up"},
	}
	if bridge != "" {
		cmds = append(cmds, []string{"-n", nodeNS, "link", "add", bridge, "type", "bridge"},
			[]string{"-n", nodeNS, "link", "set", bridge, "up"},
			[]string{"-n", nodeNS, "link", "set", tap, "master", bridge})
	}
	cmds = append(cmds, []string{"-n", nodeNS, "link", "set", tap, "up"})
	for _, c := range cmds {
		if out, err := exec.Command("ip", c...).CombinedOutput(); err != nil && !strings.Contains(string(out), "File exists") {
			b.t.Fatalf("ip %v: %v: %s", c, err, out)
		}
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

func inBridge(t *testing.T, ns, dev string) bool {
	h, nsh, err := namespace.Netlink(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer nsh.Close()
	defer h.Close()
	l, err := h.LinkByName(dev)
	return err == nil && l.Attrs().MasterIndex != 0
}

// Issue 18: a fabric port Nova binds on a host where bothnia's agent runs
// is bound by bothnia (vif_type tap), goes ACTIVE only once bothnia's
// agent reports its tap programmed, and within 2 s of that; a host whose
// agent is dead gets no binding from bothnia.
func TestDriverInsideNeutron(t *testing.T) {
	b := newBed(t)

	p := b.bind("vm1", b.net, b.subnet, "10.101.128.10", "knox-c1")
	if p.VIFType != "tap" {
		t.Fatalf("a fabric port on knox-c1 (bothnia's agent alive) is bound as %q, want tap (bothnia's): details %v", p.VIFType, p.VIFDetails)
	}
	if p.Status == "ACTIVE" {
		t.Fatal("the port is ACTIVE before its tap exists")
	}
	t0 := time.Now()
	b.tap("knox-c1", p, "") // vif_type tap: Nova makes the tap only
	var tUp, tActive time.Time
	for time.Since(t0) < 60*time.Second && tActive.IsZero() {
		up := b.upKey("knox-c1", p.ID)
		if up && tUp.IsZero() {
			tUp = time.Now()
		}
		if b.status(p.ID) == "ACTIVE" {
			tActive = time.Now()
			if tUp.IsZero() {
				t.Fatal("the port went ACTIVE before bothnia's agent reported it up")
			}
			if !inBridge(t, b.l.NodeNS("knox-c1"), plan.TapName(p.ID)) {
				t.Error("ACTIVE, but its tap is in no bridge")
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if tActive.IsZero() {
		t.Fatalf("the port is %s 60 s after its tap appeared (reported up: %v)\n%s", b.status(p.ID), !tUp.IsZero(), b.debug())
	}
	if d := tActive.Sub(tUp); d > 2*time.Second {
		t.Errorf("ACTIVE %s after bothnia's agent reported the port up; want within 2 s", d)
	}
	t.Logf("tap made -> reported up by bothnia's agent: %s; -> ACTIVE: %s", tUp.Sub(t0).Round(time.Millisecond), tActive.Sub(t0).Round(time.Millisecond))

	// Neutron's own agent on the same node, for another network (a flat
	// one on physnet2): what it takes from the binding PUT to ACTIVE,
	// beside bothnia for a fabric port; and what it does to bothnia's taps.
	t.Run("beside Neutron's own agent", func(t *testing.T) {
		node := b.l.NodeNS("knox-c1")
		for _, c := range [][]string{{"-n", node, "link", "add", "em2", "type", "veth", "peer", "name", "em2p"},
			{"-n", node, "link", "set", "em2", "up"}, {"-n", node, "link", "set", "em2p", "up"}} {
			if out, err := exec.Command("ip", c...).CombinedOutput(); err != nil {
				t.Fatalf("ip %v: %v: %s", c, err, out)
			}
		}
		if err := b.d.StartHost(b.ctx, devcloud.Host{Cloud: "knox", Name: "knox-c1", NS: node, Mappings: "physnet2:em2"}); err != nil {
			t.Fatal(err)
		}
		n, err := networks.Create(b.ctx, b.cloud.Network, provider.CreateOptsExt{
			CreateOptsBuilder: networks.CreateOpts{Name: "other", ProjectID: devcloud.ProjectID},
			Segments:          []provider.Segment{{NetworkType: "flat", PhysicalNetwork: "physnet2"}},
		}).Extract()
		if err != nil {
			t.Fatal(err)
		}
		dhcp := false
		sub, err := subnets.Create(b.ctx, b.cloud.Network, subnets.CreateOpts{NetworkID: n.ID, CIDR: "10.202.0.0/24", IPVersion: 4, ProjectID: devcloud.ProjectID, EnableDHCP: &dhcp}).Extract()
		if err != nil {
			t.Fatal(err)
		}
		boot := func(name, netID, subID, ip, bridge string) (*openstack.Port, time.Duration) {
			t0 := time.Now()
			p := b.bind(name, netID, subID, ip, "knox-c1")
			b.tap("knox-c1", p, bridge)
			for time.Since(t0) < 60*time.Second {
				if b.status(p.ID) == "ACTIVE" {
					return p, time.Since(t0)
				}
				time.Sleep(20 * time.Millisecond)
			}
			t.Fatalf("%s: %s 60 s after its binding PUT\n%s\n%s", name, b.status(p.ID), b.debug(), b.mentions(p.ID))
			return nil, 0
		}
		const runs = 3
		var lbT, bnT time.Duration
		for i := 0; i < runs; i++ {
			lb, d := boot(fmt.Sprintf("other%d", i), n.ID, sub.ID, fmt.Sprintf("10.202.0.%d", 10+i), "brq"+n.ID[:11])
			if lb.VIFType != "bridge" {
				t.Fatalf("the other network's port is bound as %q, want bridge (linuxbridge's)", lb.VIFType)
			}
			lbT += d
			bn, d := boot(fmt.Sprintf("fab%d", i), b.net, b.subnet, fmt.Sprintf("10.101.128.%d", 20+i), "")
			if bn.VIFType != "tap" {
				t.Fatalf("the fabric port is bound as %q beside Neutron's agent, want tap", bn.VIFType)
			}
			bnT += d
		}
		t.Logf("binding PUT -> ACTIVE, mean of %d on knox-c1: Neutron's linuxbridge agent %s, bothnia %s (%.2fx)",
			runs, (lbT / runs).Round(time.Millisecond), (bnT / runs).Round(time.Millisecond), float64(lbT)/float64(bnT))
		// What the unmodified linuxbridge agent did to bothnia's taps.
		out, _ := exec.Command("ip", "netns", "exec", node, "iptables-save").CombinedOutput()
		chains := 0
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "-A neutron-linuxbri-") && strings.Contains(line, plan.TapName(p.ID)) {
				chains++
			}
		}
		t.Logf("linuxbridge agent rules naming bothnia's tap %s: %d", plan.TapName(p.ID), chains)
		// The linuxbridge agent sees bothnia's taps and, unable to wire
		// them (the fabric's physical network is not its), reports them
		// down; bothnia's driver holds them ACTIVE while its agent has
		// them up.
		active := false
		for i := 0; i < 50 && !active; i++ {
			active = b.status(p.ID) == "ACTIVE"
			time.Sleep(100 * time.Millisecond)
		}
		if !active {
			t.Errorf("vm1's port is %s beside the linuxbridge agent, though bothnia's agent has it up", b.status(p.ID))
		}
	})

	t.Run("dead host", func(t *testing.T) {
		pidFile := filepath.Join(lab.StateDir, b.l.Prefix, "agent-knox-c2.pid")
		raw, err := os.ReadFile(pidFile)
		if err != nil {
			t.Fatal(err)
		}
		var pid int
		fmt.Sscan(string(raw), &pid)
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		// Its status key goes with its lease (10 s).
		deadline := time.Now().Add(20 * time.Second)
		for {
			resp, err := b.cli.Get(b.ctx, store.StatusKey("knox-c2"))
			if err == nil && len(resp.Kvs) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("knox-c2's status stayed in the store after its agent died")
			}
			time.Sleep(200 * time.Millisecond)
		}
		time.Sleep(1500 * time.Millisecond) // the driver's cache of the store
		q := b.bind("vm2", b.net, b.subnet, "10.101.128.11", "knox-c2")
		if q.VIFType == "tap" {
			t.Errorf("a port on knox-c2, whose agent is dead, was bound by bothnia")
		}
		t.Logf("knox-c2 dead: bound as %q", q.VIFType)
	})
}
