package openstack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/quotas"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/addressgroups"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/groups"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/subnets"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/bothnia/bothnia/internal/kerneltest"
	"github.com/bothnia/bothnia/internal/neutrontest"
	"github.com/bothnia/bothnia/spec"
	"github.com/bothnia/bothnia/store"
)

type cloudSeed struct {
	*neutrontest.Seeded
	c *Cloud
}

func (cs *cloudSeed) port(t *testing.T, ctx context.Context, name, host, ip string) string {
	t.Helper()
	id, err := cs.Port(ctx, name, host, ip)
	if err != nil {
		t.Fatalf("%s: %v", cs.c.Name, err)
	}
	return id
}

// fixture is two real Neutron servers standing for Knox (managed) and
// ePouta (foreign), and an etcd holding the example fabric without VMs.
type fixture struct {
	ctx        context.Context
	etcd       string // client URL
	cloudsFile string
	clouds     map[string]*Cloud
	seeds      map[string]*cloudSeed
	cli        *clientv3.Client
}

func newFixture(t *testing.T) *fixture {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	servers := neutrontest.Start(t, "knox", "epouta")
	dir := t.TempDir()
	cloudsFile, err := neutrontest.CloudsYAML(dir, servers)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("../examples/knox-epouta.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s, err := spec.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	s.Sites["knox"].Cloud, s.Sites["epouta"].Cloud = "knox", "epouta"
	s.Sites["epouta"].Mode = spec.Foreign
	for _, n := range s.Networks {
		n.VMs = slices.DeleteFunc(n.VMs, func(vm *spec.VM) bool { return n.Name == "mgmt" })
	}
	srv, err := store.StartServer(filepath.Join(dir, "etcd"), "unix://"+filepath.Join(dir, "etcd.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	cli, err := store.Connect(store.ClientConfig{Endpoints: []string{srv.ClientURL}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	if _, _, err := store.Push(ctx, cli, s, true); err != nil {
		t.Fatal(err)
	}
	clouds, err := ConnectSites(ctx, s, Options{CloudsFile: cloudsFile})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{ctx: ctx, etcd: srv.ClientURL, cloudsFile: cloudsFile, clouds: clouds, seeds: map[string]*cloudSeed{}, cli: cli}
	for sn, c := range clouds {
		sd, err := neutrontest.Seed(ctx, c.Network)
		if err != nil {
			t.Fatalf("%s: %v", sn, err)
		}
		f.seeds[sn] = &cloudSeed{sd, c}
	}
	return f
}

func (f *fixture) importAll(t *testing.T) *Report {
	t.Helper()
	invs, err := ReadAll(f.ctx, f.clouds)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Import(f.ctx, f.cli, invs, true)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func (f *fixture) fabric(t *testing.T) *spec.Spec {
	t.Helper()
	objs, _, err := store.Load(f.ctx, f.cli)
	if err != nil {
		t.Fatal(err)
	}
	s, problems, err := store.Assemble(objs)
	if err != nil || len(problems) > 0 {
		t.Fatalf("store: %v %v", err, problems)
	}
	return s
}

func (f *fixture) sync(t *testing.T, mechanism string) []SyncAction {
	t.Helper()
	inv, err := Read(f.ctx, f.clouds["epouta"])
	if err != nil {
		t.Fatal(err)
	}
	acts, err := PlanSync(f.fabric(t), "epouta", inv, SyncOptions{Mechanism: mechanism, RuleQuota: RuleQuotas(f.ctx, f.clouds["epouta"], inv)})
	if err != nil {
		t.Fatal(err)
	}
	done, err := ApplySync(f.ctx, f.clouds["epouta"], acts)
	if err != nil {
		t.Fatal(err)
	}
	return done
}

// TestNeutron runs import, subnet plan/apply, sync and watch against two
// real neutron-servers: one per site.
func TestNeutron(t *testing.T) {
	f := newFixture(t)
	knox, epouta := f.seeds["knox"], f.seeds["epouta"]
	vm1 := knox.port(t, f.ctx, "knox-vm1", "knox-c1", "10.101.128.10")
	knox.port(t, f.ctx, "knox-unbooted", "", "10.101.128.30")
	knox.port(t, f.ctx, "knox-stray", "some-other-host", "10.101.128.31")
	epouta.port(t, f.ctx, "epouta-vm1", "epouta-c1.csc.example", "10.101.0.10")

	t.Run("import", func(t *testing.T) {
		rep := f.importAll(t)
		var keys []string
		for _, c := range rep.Changes {
			keys = append(keys, string(c.Op)+" "+c.Key)
		}
		for _, want := range []string{"+ " + store.PortKey("mgmt", "knox-vm1"), "+ " + store.PortKey("mgmt", "epouta-vm1")} {
			if !slices.Contains(keys, want) {
				t.Errorf("changes %v lack %s", keys, want)
			}
		}
		reasons := map[string]string{}
		for _, u := range rep.Unmapped {
			reasons[u.Name] = u.Reason
		}
		if !strings.Contains(reasons["knox-unbooted"], "not bound to a host") {
			t.Errorf("unbound port: reason %q, unmapped %v", reasons["knox-unbooted"], rep.Unmapped)
		}
		if !strings.Contains(reasons["knox-stray"], `bound to host "some-other-host", which is no node of site knox`) {
			t.Errorf("stray port: reason %q", reasons["knox-stray"])
		}
		s := f.fabric(t)
		vm, _ := s.VM("knox-vm1")
		if vm == nil || vm.PortID != vm1 || vm.Node != "knox-c1" || vm.IP != "10.101.128.10" || !slices.Equal(vm.SecurityGroups, []string{"mosler"}) {
			t.Fatalf("knox-vm1 in the store: %+v", vm)
		}
		if e, _ := s.VM("epouta-vm1"); e == nil || e.Node != "epouta-c1" {
			t.Fatalf("epouta-vm1 (bound by FQDN) in the store: %+v", e)
		}
		g := s.SecurityGroup("mosler")
		found := false
		for _, r := range g.Rules {
			found = found || (r.Protocol == "tcp" && r.PortRange == "7000" && r.RemoteGroup == "mosler" && r.Direction == "ingress")
		}
		if !found {
			t.Errorf("mosler's rules from Knox's Neutron lack tcp 7000 from mosler: %+v", g.Rules)
		}
		if again := f.importAll(t); len(again.Changes) != 0 {
			t.Errorf("a second import changed %v", again.Changes)
		}
	})

	t.Run("subnets", func(t *testing.T) {
		invs, err := ReadAll(f.ctx, f.clouds)
		if err != nil {
			t.Fatal(err)
		}
		s := f.fabric(t)
		changes, err := PlanSubnets(s, invs)
		if err != nil {
			t.Fatal(err)
		}
		if len(changes) != 2 {
			t.Fatalf("want a change per site, got %v", changes)
		}
		if err := ApplySubnets(f.ctx, f.clouds, changes); err != nil {
			t.Fatal(err)
		}
		sub, err := subnets.Get(f.ctx, f.clouds["knox"].Network, knox.Subnet).Extract()
		if err != nil {
			t.Fatal(err)
		}
		if sub.EnableDHCP || len(sub.AllocationPools) != 1 || sub.AllocationPools[0].Start != "10.101.128.1" ||
			!slices.Equal(sub.DNSNameservers, []string{"10.101.128.0"}) {
			t.Errorf("knox's subnet after apply: dhcp %t pools %v dns %v", sub.EnableDHCP, sub.AllocationPools, sub.DNSNameservers)
		}
		sub, err = subnets.Get(f.ctx, f.clouds["epouta"].Network, epouta.Subnet).Extract()
		if err != nil {
			t.Fatal(err)
		}
		if !sub.EnableDHCP || sub.AllocationPools[0].Start != "10.101.0.4" {
			t.Errorf("epouta's subnet after apply: dhcp %t pools %v", sub.EnableDHCP, sub.AllocationPools)
		}
		invs, err = ReadAll(f.ctx, f.clouds)
		if err != nil {
			t.Fatal(err)
		}
		if again, err := PlanSubnets(s, invs); err != nil || len(again) != 0 {
			t.Errorf("a second plan: %v %v", again, err)
		}
	})

	t.Run("sync by address groups", func(t *testing.T) {
		done := f.sync(t, ByAddressGroups)
		var ops []string
		for _, a := range done {
			ops = append(ops, a.Op)
		}
		if !slices.Contains(ops, "create-address-group") || !slices.Contains(ops, "create-rule") {
			t.Fatalf("first sync did %v", done)
		}
		ag := addressGroup(t, f, "bothnia-mosler")
		if !slices.Equal(ag.Addresses, []string{"10.101.128.10/32"}) {
			t.Errorf("address group holds %v, want Knox's member 10.101.128.10/32", ag.Addresses)
		}
		g, err := groups.Get(f.ctx, f.clouds["epouta"].Network, epouta.Mosler).Extract()
		if err != nil {
			t.Fatal(err)
		}
		mirrored := false
		for _, r := range g.Rules {
			mirrored = mirrored || (r.RemoteAddressGroupID == ag.ID && r.Protocol == "tcp" && r.PortRangeMin == 7000)
		}
		if !mirrored {
			t.Errorf("no rule of ePouta's mosler admits tcp 7000 from the address group: %+v", g.Rules)
		}
		if again := f.sync(t, ByAddressGroups); len(again) != 0 {
			t.Errorf("a second sync did %v", again)
		}
		// The Knox VM goes: its address leaves ePouta's cloud.
		if err := ports.Delete(f.ctx, f.clouds["knox"].Network, vm1).ExtractErr(); err != nil {
			t.Fatal(err)
		}
		f.importAll(t)
		done = f.sync(t, ByAddressGroups)
		if len(done) != 1 || done[0].Op != "remove-addresses" {
			t.Errorf("after the port's deletion sync did %v", done)
		}
		if ag := addressGroup(t, f, "bothnia-mosler"); len(ag.Addresses) != 0 {
			t.Errorf("address group still holds %v after the port was deleted", ag.Addresses)
		}
	})

	t.Run("sync by prefixes", func(t *testing.T) {
		knox.port(t, f.ctx, "knox-vm5", "knox-c1", "10.101.128.40")
		knox.port(t, f.ctx, "knox-vm6", "knox-c2", "10.101.128.41")
		f.importAll(t)
		done := f.sync(t, ByPrefixes)
		// The address groups' mirrors and the groups go (default's too:
		// it has no members at Knox); one mirror covers both members
		// exactly.
		creates := 0
		for _, a := range done {
			switch a.Op {
			case "create-rule":
				creates++
			case "delete-rule", "delete-address-group":
			default:
				t.Errorf("switching to prefixes did %v", a)
			}
		}
		if creates != 1 {
			t.Errorf("switching to prefixes created %d rules: %v", creates, done)
		}
		inv, err := Read(f.ctx, f.clouds["epouta"])
		if err != nil {
			t.Fatal(err)
		}
		for _, ag := range inv.AddressGroups {
			t.Errorf("address group %s stayed after the switch to prefixes", ag.Name)
		}
		mirrors := func() []string {
			g, err := groups.Get(f.ctx, f.clouds["epouta"].Network, epouta.Mosler).Extract()
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, r := range g.Rules {
				if strings.HasPrefix(r.Description, "bothnia-mirror") {
					out = append(out, fmt.Sprintf("%s %s %d %s %s", r.Direction, r.Protocol, r.PortRangeMin, r.RemoteIPPrefix, r.RemoteAddressGroupID))
				}
			}
			slices.Sort(out)
			return out
		}
		if got := mirrors(); !slices.Equal(got, []string{"ingress tcp 7000 10.101.128.40/31 "}) {
			t.Errorf("mirrors %q, want one admitting 10.101.128.40/31", got)
		}
		if again := f.sync(t, ByPrefixes); len(again) != 0 {
			t.Errorf("a second sync did %v", again)
		}
		// A member that would need a rule more than the project may hold:
		// said before writing, with what to raise, and nothing written.
		inv, err = Read(f.ctx, f.clouds["epouta"])
		if err != nil {
			t.Fatal(err)
		}
		have := 0
		for _, g := range inv.Groups {
			if g.ProjectID == neutrontest.ProjectID {
				have += len(g.Rules)
			}
		}
		if _, err := quotas.Update(f.ctx, f.clouds["epouta"].Network, neutrontest.ProjectID, quotas.UpdateOpts{SecurityGroupRule: &have}).Extract(); err != nil {
			t.Fatal(err)
		}
		vm7 := knox.port(t, f.ctx, "knox-vm7", "knox-c1", "10.101.128.60")
		f.importAll(t)
		inv, err = Read(f.ctx, f.clouds["epouta"])
		if err != nil {
			t.Fatal(err)
		}
		acts, err := PlanSync(f.fabric(t), "epouta", inv, SyncOptions{RuleQuota: RuleQuotas(f.ctx, f.clouds["epouta"], inv)})
		var qe *QuotaError
		if !errors.As(err, &qe) || qe.Add != 1 || qe.Quota != have || !strings.Contains(err.Error(), fmt.Sprintf("openstack quota set --secgroup-rules %d", have+1)) {
			t.Fatalf("over the quota: err %v", err)
		}
		if len(acts) != 0 {
			t.Errorf("over the quota, sync would still write %v", acts)
		}
		unlimited := -1
		if _, err := quotas.Update(f.ctx, f.clouds["epouta"].Network, neutrontest.ProjectID, quotas.UpdateOpts{SecurityGroupRule: &unlimited}).Extract(); err != nil {
			t.Fatal(err)
		}
		if done := f.sync(t, ByPrefixes); len(done) != 1 || done[0].Op != "create-rule" {
			t.Errorf("with the quota raised sync did %v", done)
		}
		if err := ports.Delete(f.ctx, f.clouds["knox"].Network, vm7).ExtractErr(); err != nil {
			t.Fatal(err)
		}
		f.importAll(t)
		if done := f.sync(t, ByPrefixes); len(done) != 1 || done[0].Op != "delete-rule" {
			t.Errorf("after the member left sync did %v", done)
		}
		if got := mirrors(); !slices.Equal(got, []string{"ingress tcp 7000 10.101.128.40/31 "}) {
			t.Errorf("mirrors %q after the member left", got)
		}
	})

	t.Run("cli", func(t *testing.T) {
		bin, cleanup, err := kerneltest.BuildBothnia()
		if err != nil {
			t.Fatal(err)
		}
		defer cleanup()
		run := func(args ...string) string {
			t.Helper()
			args = append(args, "--etcd-endpoints", f.etcd, "--clouds", f.cloudsFile)
			out, err := exec.Command(bin, append([]string{"openstack"}, args...)...).CombinedOutput()
			if err != nil {
				t.Fatalf("bothnia openstack %v: %v\n%s", args, err, out)
			}
			return string(out)
		}
		knox.port(t, f.ctx, "knox-vm3", "knox-c2", "10.101.128.12")
		if out := run("import", "--yes"); !strings.Contains(out, "+ port mgmt/knox-vm3") || !strings.Contains(out, "not mapped: cloud knox: port knox-unbooted") {
			t.Errorf("import --yes printed:\n%s", out)
		}
		if out := run("import"); !strings.Contains(out, "no changes") {
			t.Errorf("a second import printed:\n%s", out)
		}
		if out := run("sync", "--once"); !strings.Contains(out, "create-rule site epouta: mosler: ingress IPv4 tcp 7000 from 10.101.128.12/32") {
			t.Errorf("sync --once printed:\n%s", out)
		}
		if out := run("sync", "--once"); strings.TrimSpace(out) != "no changes: every foreign cloud admits exactly the other sites' members" {
			t.Errorf("a second sync --once printed:\n%s", out)
		}
		cmd := exec.Command(bin, "openstack", "sync", "--once", "--mechanism", "address-groups", "--etcd-endpoints", f.etcd, "--clouds", f.cloudsFile)
		if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "would admit every source") {
			t.Errorf("address groups without --address-groups-enforced: %v\n%s", err, out)
		}
		if out := run("plan"); !strings.Contains(out, "no changes") {
			t.Errorf("plan after apply printed:\n%s", out)
		}
	})

	t.Run("watch", func(t *testing.T) {
		ctx, cancel := context.WithCancel(f.ctx)
		defer cancel()
		go func() { _ = Watch(ctx, f.cli, f.clouds, 200*time.Millisecond, nil) }()
		epouta.port(t, f.ctx, "epouta-vm2", "epouta-c1", "10.101.0.11")
		deadline := time.Now().Add(20 * time.Second)
		for {
			resp, err := f.cli.Get(f.ctx, store.PortKey("mgmt", "epouta-vm2"))
			if err == nil && len(resp.Kvs) == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("a port created in ePouta's Neutron did not reach the store within 20 s")
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}

func addressGroup(t *testing.T, f *fixture, name string) addressgroups.AddressGroup {
	t.Helper()
	page, err := addressgroups.List(f.clouds["epouta"].Network, addressgroups.ListOpts{Name: name}).AllPages(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	ags, err := addressgroups.ExtractGroups(page)
	if err != nil || len(ags) != 1 {
		t.Fatalf("address group %s: %v %v", name, ags, err)
	}
	return ags[0]
}
