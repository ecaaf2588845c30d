// Package neutrontest starts real Neutron API servers for tests: Debian's
// neutron-server (ML2, no keystone, no message bus) on a real MariaDB, one
// database per cloud, all in a temporary directory and stopped on cleanup.
//
// Nothing here mocks Neutron: a request bothnia gets wrong is refused or
// misapplied by the same server code a cloud runs.
package neutrontest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/portsbinding"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/provider"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/groups"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/rules"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/subnets"
)

// Cloud is one running neutron-server.
type Cloud struct {
	Name string
	// Endpoint is the API root, e.g. http://127.0.0.1:PORT/ (noauth: no
	// token, and every create names its project).
	Endpoint string
	// Log is the server's log file, printed when a test fails.
	Log string
}

// ProjectID is the project every test object belongs to.
const ProjectID = "5d1d7d9b1a6b4e4c9a1f0d1e2c3b4a59"

var binaries = []string{"mariadb-install-db", "mariadbd", "mariadb", "neutron-db-manage", "neutron-server"}

// Require fails under CI (which installs the packages) and skips elsewhere
// when the servers cannot run here.
func Require(t testing.TB) {
	t.Helper()
	var missing []string
	for _, b := range binaries {
		if _, err := exec.LookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	if os.Geteuid() != 0 {
		missing = append(missing, "root (mariadbd --user=root)")
	}
	if len(missing) == 0 {
		return
	}
	msg := "neutron tests need " + strings.Join(missing, ", ") + ": run scripts/install-deps.sh as root"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// Start runs one MariaDB and one neutron-server per name, and stops them
// when the test ends. It takes about 15 s; tests share one call per package
// where they can.
func Start(t testing.TB, names ...string) map[string]*Cloud {
	t.Helper()
	Require(t)
	dir, err := os.MkdirTemp("", "bothnia-neutron-")
	if err != nil {
		t.Fatal(err)
	}
	var procs []*exec.Cmd
	t.Cleanup(func() {
		for i := len(procs) - 1; i >= 0; i-- {
			stop(procs[i])
		}
		os.RemoveAll(dir)
	})
	dbPort := freePort(t)
	if out, err := exec.Command("mariadb-install-db", "--datadir="+filepath.Join(dir, "data"),
		"--user=root", "--auth-root-authentication-method=normal").CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}
	db := exec.Command("mariadbd", "--no-defaults", "--datadir="+filepath.Join(dir, "data"),
		"--socket="+filepath.Join(dir, "mysql.sock"), fmt.Sprintf("--port=%d", dbPort),
		"--bind-address=127.0.0.1", "--user=root", "--pid-file="+filepath.Join(dir, "mysql.pid"),
		"--skip-log-bin", "--innodb-flush-log-at-trx-commit=0", "--log-error="+filepath.Join(dir, "mysql.log"))
	if err := start(db); err != nil {
		t.Fatal(err)
	}
	procs = append(procs, db)
	if err := waitTCP(fmt.Sprintf("127.0.0.1:%d", dbPort), 60*time.Second); err != nil {
		t.Fatalf("mariadb did not start: %v\n%s", err, readTail(filepath.Join(dir, "mysql.log")))
	}

	clouds := map[string]*Cloud{}
	cmds := map[string]*exec.Cmd{}
	var wg sync.WaitGroup
	errs := make([]error, len(names))
	for i, name := range names {
		conf, c, err := configure(dir, name, dbPort, freePort(t))
		if err != nil {
			t.Fatal(err)
		}
		clouds[name] = c
		wg.Add(1)
		go func() {
			defer wg.Done()
			sql := fmt.Sprintf("CREATE DATABASE IF NOT EXISTS %s CHARACTER SET utf8", dbName(name))
			if out, err := exec.Command("mariadb", "--socket="+filepath.Join(dir, "mysql.sock"), "-uroot", "-e", sql).CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("create database for %s: %v\n%s", name, err, out)
				return
			}
			if out, err := exec.Command("neutron-db-manage", "--config-file", conf, "upgrade", "heads").CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("neutron-db-manage for %s: %v\n%s", name, err, out)
				return
			}
		}()
		cmds[name] = exec.Command("neutron-server", "--config-file", conf)
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range names {
		if err := start(cmds[name]); err != nil {
			t.Fatal(err)
		}
		procs = append(procs, cmds[name])
	}
	for _, name := range names {
		c := clouds[name]
		if err := waitAPI(c.Endpoint, 90*time.Second); err != nil {
			t.Fatalf("neutron-server %s did not answer: %v\n%s", name, err, readTail(c.Log))
		}
	}
	return clouds
}

func dbName(cloud string) string { return "neutron_" + strings.ReplaceAll(cloud, "-", "_") }

// configure writes a neutron.conf that runs the API alone: noauth, ML2
// with VLAN segments on physnet1 (the inter-site link), no agents, no
// notifications, a fake message bus.
func configure(dir, name string, dbPort, apiPort int) (string, *Cloud, error) {
	state := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Join(state, "lock"), 0o755); err != nil {
		return "", nil, err
	}
	log := filepath.Join(state, "server.log")
	conf := fmt.Sprintf(`[DEFAULT]
auth_strategy = noauth
core_plugin = ml2
service_plugins = router
bind_host = 127.0.0.1
bind_port = %d
notify_nova_on_port_status_changes = False
notify_nova_on_port_data_changes = False
api_workers = 1
rpc_workers = 0
rpc_state_report_workers = 0
transport_url = fake:/
state_path = %s
log_file = %s
debug = False

[database]
connection = mysql+pymysql://root@127.0.0.1:%d/%s

[oslo_concurrency]
lock_path = %s

[ml2]
type_drivers = vlan,flat
tenant_network_types =
mechanism_drivers =
extension_drivers = port_security

[ml2_type_vlan]
network_vlan_ranges = physnet1:1200:1300

[securitygroup]
firewall_driver = noop
`, apiPort, state, log, dbPort, dbName(name), filepath.Join(state, "lock"))
	path := filepath.Join(state, "neutron.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return "", nil, err
	}
	return path, &Cloud{Name: name, Endpoint: fmt.Sprintf("http://127.0.0.1:%d/", apiPort), Log: log}, nil
}

func start(cmd *exec.Cmd) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	return nil
}

// stop ends a server and everything it forked (neutron-server runs its API
// worker as a child).
func stop(cmd *exec.Cmd) {
	if cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitTCP(addr string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func waitAPI(endpoint string, within time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", endpoint+"v2.0/networks", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET /v2.0/networks: %s", resp.Status)
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func readTail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
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
