// Package devcloud runs real OpenStack Neutron on this machine, from
// Debian's packages: MariaDB, RabbitMQ, one neutron-server per cloud, and
// on request real neutron-linuxbridge-agents and neutron-dhcp-agents, each
// inside a network namespace that stands for one of the cloud's hosts.
// The lab runs a foreign site this way and the tests that claim Neutron's
// behaviour use it: nothing here imitates Neutron.
//
// Every process is started in its own process group with a pid file in
// the deployment's directory, so a deployment outlives the command that
// started it (the lab's) and Stop finds it again from the directory alone.
// The servers listen on loopback only; an agent in a namespace reaches
// RabbitMQ through a unix socket (socat on both sides), since a namespace
// has a loopback of its own.
package devcloud

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Binaries needed to run the API alone, and with agents.
var (
	ServerBinaries = []string{"mariadb-install-db", "mariadbd", "mariadb", "neutron-db-manage", "neutron-server"}
	AgentBinaries  = []string{"rabbitmq-server", "epmd", "socat", "sudo", "neutron-linuxbridge-agent", "neutron-dhcp-agent", "dnsmasq", "ebtables-nft", "ipset"}
)

// Missing lists the binaries (and root) a deployment needs that this
// machine lacks; empty when it can run.
func Missing(agents bool) []string {
	need := ServerBinaries
	if agents {
		need = append(append([]string{}, need...), AgentBinaries...)
	}
	var out []string
	for _, b := range need {
		if _, err := exec.LookPath(b); err != nil {
			if _, err := os.Stat(filepath.Join("/usr/lib/rabbitmq/bin", b)); err != nil {
				out = append(out, b)
			}
		}
	}
	if os.Geteuid() != 0 {
		out = append(out, "root")
	}
	return out
}

// ProjectID is the project of every object the lab and the tests create
// (noauth: each create names its project).
const ProjectID = "5d1d7d9b1a6b4e4c9a1f0d1e2c3b4a59"

// PhysNet is the physical network the fabric's VLAN segments are on, and
// PhysDev the host interface the agents map it to.
const (
	PhysNet = "physnet1"
	PhysDev = "em1"
)

// Deployment is one MariaDB, optionally one RabbitMQ, and a neutron-server
// per cloud.
type Deployment struct {
	Dir    string
	Agents bool // RabbitMQ runs and the servers drive real agents
	// DNSDomain is the clouds' dns_domain (Neutron's DNS integration):
	// ports named with dns_name get it as their DHCP host name's domain.
	// Empty: Neutron's default, openstacklocal.
	DNSDomain string
	Clouds    map[string]*Cloud
	dbPort    int
	mqPort    int
	opts      Options
}

// Options shape a deployment.
type Options struct {
	Agents    bool   // RabbitMQ and the linuxbridge mechanism driver, so that StartHost can run agents
	DNSDomain string // see Deployment.DNSDomain
	// Mechanisms are ML2's mechanism drivers in order; empty is
	// linuxbridge with agents, none without.
	Mechanisms []string
	// PythonPath goes first on the servers' Python path: where an
	// out-of-tree driver (bothnia's) is installed.
	PythonPath string
	// Conf is appended to every server's neutron.conf (a driver's own
	// section).
	Conf string
}

// Cloud is one running neutron-server.
type Cloud struct {
	Name string
	// Endpoint is the API root, e.g. http://127.0.0.1:PORT/ (noauth: no
	// token, and every create names its project).
	Endpoint string
	Log      string // the server's log, for failures
	conf     string
}

// Start runs a deployment in dir (created if missing) with a cloud per
// name. It takes 15 to 30 s.
func Start(ctx context.Context, dir string, o Options, names ...string) (d *Deployment, err error) {
	agents := o.Agents
	if m := Missing(agents); len(m) > 0 {
		return nil, fmt.Errorf("devcloud: missing %s: run scripts/install-deps.sh as root", strings.Join(m, ", "))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// dnsmasq reads the DHCP agent's host files as nobody: the directory
	// must be searchable (its parents too, which MkdirTemp's are).
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	d = &Deployment{Dir: dir, Agents: agents, DNSDomain: o.DNSDomain, Clouds: map[string]*Cloud{}, opts: o}
	defer func() {
		if err != nil {
			_ = Stop(dir)
		}
	}()
	if d.dbPort, err = freePort(); err != nil {
		return nil, err
	}
	mq := make(chan error, 1)
	if agents {
		if d.mqPort, err = freePort(); err != nil {
			return nil, err
		}
		go func() { mq <- d.startRabbit(ctx) }()
	} else {
		mq <- nil
	}
	if err := d.startDB(ctx); err != nil {
		return nil, errors.Join(err, <-mq)
	}
	confs := map[string]string{}
	for _, name := range names {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		c, err := d.configure(name, port)
		if err != nil {
			return nil, err
		}
		d.Clouds[name] = c
		confs[name] = c.conf
	}
	errs := make(chan error, len(names))
	for _, name := range names {
		go func() {
			sql := fmt.Sprintf("CREATE DATABASE IF NOT EXISTS %s CHARACTER SET utf8", dbName(name))
			if out, err := exec.CommandContext(ctx, "mariadb", "--socket="+d.path("mysql.sock"), "-uroot", "-e", sql).CombinedOutput(); err != nil {
				errs <- fmt.Errorf("devcloud: create database for %s: %v: %s", name, err, out)
				return
			}
			if out, err := exec.CommandContext(ctx, "neutron-db-manage", "--config-file", confs[name], "upgrade", "heads").CombinedOutput(); err != nil {
				errs <- fmt.Errorf("devcloud: neutron-db-manage for %s: %v: %s", name, err, tail(string(out)))
				return
			}
			errs <- nil
		}()
	}
	var all []error
	for range names {
		all = append(all, <-errs)
	}
	all = append(all, <-mq)
	if err := errors.Join(all...); err != nil {
		return nil, err
	}
	var env []string
	if o.PythonPath != "" {
		env = []string{"PYTHONPATH=" + o.PythonPath}
	}
	for _, name := range names {
		if err := d.daemonEnv("server-"+name, "", env, "neutron-server", "--config-file", confs[name]); err != nil {
			return nil, err
		}
	}
	for _, name := range names {
		c := d.Clouds[name]
		if err := waitAPI(ctx, c.Endpoint, 120*time.Second); err != nil {
			return nil, fmt.Errorf("devcloud: neutron-server %s did not answer: %w\n%s", name, err, readTail(c.Log))
		}
	}
	return d, d.save()
}

// Open finds a running deployment from its directory.
func Open(dir string) (*Deployment, error) {
	b, err := os.ReadFile(filepath.Join(dir, "deployment"))
	if err != nil {
		return nil, err
	}
	d := &Deployment{Dir: dir, Clouds: map[string]*Cloud{}}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "agents":
			d.Agents = f[1] == "true"
		case len(f) == 2 && f[0] == "rabbit":
			d.mqPort, _ = strconv.Atoi(f[1])
		case len(f) == 2 && f[0] == "db":
			d.dbPort, _ = strconv.Atoi(f[1])
		case len(f) == 2 && f[0] == "domain":
			d.DNSDomain = f[1]
		case len(f) == 3 && f[0] == "cloud":
			d.Clouds[f[1]] = &Cloud{Name: f[1], Endpoint: f[2], Log: d.path(f[1], "server.log"), conf: d.path(f[1], "neutron.conf")}
		}
	}
	return d, nil
}

func (d *Deployment) save() error {
	var b strings.Builder
	fmt.Fprintf(&b, "agents %v\nrabbit %d\ndb %d\n", d.Agents, d.mqPort, d.dbPort)
	if d.DNSDomain != "" {
		fmt.Fprintf(&b, "domain %s\n", d.DNSDomain)
	}
	for name, c := range d.Clouds {
		fmt.Fprintf(&b, "cloud %s %s\n", name, c.Endpoint)
	}
	return os.WriteFile(d.path("deployment"), []byte(b.String()), 0o644)
}

// Stop ends every process of the deployment in dir (agents first, the
// database last) and leaves the directory.
func Stop(dir string) error {
	pids, _ := filepath.Glob(filepath.Join(dir, "pid", "*"))
	// The DHCP agents' dnsmasq servers leave their sessions.
	dnsmasqs, _ := filepath.Glob(filepath.Join(dir, "hosts", "*", "dhcp", "*", "pid"))
	pids = append(pids, dnsmasqs...)
	order := func(p string) int {
		switch b := filepath.Base(p); {
		case strings.HasPrefix(b, "host-"), b == "pid":
			return 0
		case strings.HasPrefix(b, "server-"):
			return 1
		case b == "socat":
			return 2
		case b == "rabbit", b == "epmd":
			return 3
		default:
			return 4 // the database
		}
	}
	var errs []error
	for stage := 0; stage <= 4; stage++ {
		for _, p := range pids {
			if order(p) == stage {
				errs = append(errs, stopPidFile(p))
			}
		}
	}
	return errors.Join(errs...)
}

func (d *Deployment) path(parts ...string) string {
	return filepath.Join(append([]string{d.Dir}, parts...)...)
}

func dbName(cloud string) string { return "neutron_" + strings.ReplaceAll(cloud, "-", "_") }

func (d *Deployment) startDB(ctx context.Context) error {
	data := d.path("mysql")
	if _, err := os.Stat(data); err != nil {
		if out, err := exec.CommandContext(ctx, "mariadb-install-db", "--datadir="+data, "--user=root",
			"--auth-root-authentication-method=normal").CombinedOutput(); err != nil {
			return fmt.Errorf("devcloud: mariadb-install-db: %v: %s", err, tail(string(out)))
		}
	}
	if err := d.daemon("db", "", "mariadbd", "--no-defaults", "--datadir="+data, "--socket="+d.path("mysql.sock"),
		fmt.Sprintf("--port=%d", d.dbPort), "--bind-address=127.0.0.1", "--user=root", "--pid-file="+d.path("mysql.pid"),
		"--skip-log-bin", "--innodb-flush-log-at-trx-commit=0", "--log-error="+d.path("mysql.log")); err != nil {
		return err
	}
	if err := waitTCP(ctx, fmt.Sprintf("127.0.0.1:%d", d.dbPort), 60*time.Second); err != nil {
		return fmt.Errorf("devcloud: mariadb did not start: %w\n%s", err, readTail(d.path("mysql.log")))
	}
	return nil
}

// startRabbit runs a private RabbitMQ on loopback (its own epmd port, so
// it never meets another node on this machine).
func (d *Deployment) startRabbit(ctx context.Context) error {
	base := d.path("rabbit")
	for _, sub := range []string{"mnesia", "log"} {
		if err := os.MkdirAll(filepath.Join(base, sub), 0o755); err != nil {
			return err
		}
	}
	epmdPort, err := freePort()
	if err != nil {
		return err
	}
	distPort, err := freePort()
	if err != nil {
		return err
	}
	files := map[string]string{
		"rabbitmq.conf":   fmt.Sprintf("listeners.tcp.default = 127.0.0.1:%d\n", d.mqPort),
		"enabled_plugins": "[].\n",
		"env.conf":        "",
	}
	for f, content := range files {
		if err := os.WriteFile(filepath.Join(base, f), []byte(content), 0o644); err != nil {
			return err
		}
	}
	node := fmt.Sprintf("bothnia%d@localhost", d.mqPort)
	env := []string{"HOME=" + base, "RABBITMQ_NODENAME=" + node, "RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		fmt.Sprintf("RABBITMQ_NODE_PORT=%d", d.mqPort), fmt.Sprintf("RABBITMQ_DIST_PORT=%d", distPort),
		"ERL_EPMD_ADDRESS=127.0.0.1", fmt.Sprintf("ERL_EPMD_PORT=%d", epmdPort),
		"RABBITMQ_MNESIA_BASE=" + filepath.Join(base, "mnesia"), "RABBITMQ_LOG_BASE=" + filepath.Join(base, "log"),
		"RABBITMQ_ENABLED_PLUGINS_FILE=" + filepath.Join(base, "enabled_plugins"),
		"RABBITMQ_CONFIG_FILE=" + filepath.Join(base, "rabbitmq"), "RABBITMQ_CONF_ENV_FILE=" + filepath.Join(base, "env.conf")}
	if err := d.daemonEnv("epmd", "", env, "epmd", "-address", "127.0.0.1", "-port", strconv.Itoa(epmdPort)); err != nil {
		return err
	}
	if err := d.daemonEnv("rabbit", "", env, "/usr/lib/rabbitmq/bin/rabbitmq-server"); err != nil {
		return err
	}
	if err := waitTCP(ctx, fmt.Sprintf("127.0.0.1:%d", d.mqPort), 90*time.Second); err != nil {
		return fmt.Errorf("devcloud: rabbitmq did not start: %w\n%s", err, readTail(d.path("log", "rabbit.log")))
	}
	// Agents in namespaces reach it through this socket.
	return d.daemon("socat", "", "socat", "UNIX-LISTEN:"+d.path("amqp.sock")+",fork,unlink-early",
		fmt.Sprintf("TCP:127.0.0.1:%d", d.mqPort))
}

func (d *Deployment) transportURL() string {
	if !d.Agents {
		return "fake:/"
	}
	return fmt.Sprintf("rabbit://guest:guest@127.0.0.1:%d/", d.mqPort)
}

// configure writes a neutron.conf: noauth, ML2 with VLAN segments on
// PhysNet; with agents, the linuxbridge mechanism driver and the iptables
// firewall over RabbitMQ, else no agents at all and a fake bus.
func (d *Deployment) configure(name string, apiPort int) (*Cloud, error) {
	state := d.path(name)
	if err := os.MkdirAll(filepath.Join(state, "lock"), 0o755); err != nil {
		return nil, err
	}
	log := filepath.Join(state, "server.log")
	workers, mech, fw := 0, "", "noop"
	if d.Agents {
		workers, mech, fw = 1, "linuxbridge", "iptables"
	}
	if len(d.opts.Mechanisms) > 0 {
		mech = strings.Join(d.opts.Mechanisms, ",")
	}
	ext, domain := "port_security", ""
	if d.DNSDomain != "" {
		ext, domain = "port_security,dns", "dns_domain = "+d.DNSDomain
	}
	conf := fmt.Sprintf(`[DEFAULT]
auth_strategy = noauth
core_plugin = ml2
service_plugins = router
bind_host = 127.0.0.1
bind_port = %d
notify_nova_on_port_status_changes = False
notify_nova_on_port_data_changes = False
api_workers = 1
rpc_workers = %d
rpc_state_report_workers = %d
transport_url = %s
state_path = %s
log_file = %s
agent_down_time = 30
debug = False
%s

[database]
connection = mysql+pymysql://root@127.0.0.1:%d/%s

[oslo_concurrency]
lock_path = %s

[experimental]
linuxbridge = True

[ml2]
type_drivers = vlan,flat
tenant_network_types =
mechanism_drivers = %s
extension_drivers = %s

[ml2_type_vlan]
network_vlan_ranges = %s:1200:1300

[securitygroup]
firewall_driver = %s
%s
`, apiPort, workers, workers, d.transportURL(), state, log, domain, d.dbPort, dbName(name), filepath.Join(state, "lock"), mech, ext, PhysNet, fw, d.opts.Conf)
	path := filepath.Join(state, "neutron.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	return &Cloud{Name: name, Endpoint: fmt.Sprintf("http://127.0.0.1:%d/", apiPort), Log: log, conf: path}, nil
}
