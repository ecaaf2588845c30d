package devcloud

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

//go:embed ebtables
var ebtablesWrapper []byte

// Host names what StartHost runs in one namespace.
type Host struct {
	Cloud string // the deployment's cloud
	Name  string // Neutron's host name (binding:host_id)
	NS    string // the network namespace that stands for it
	DHCP  bool   // a neutron-dhcp-agent too (its qdhcp namespaces are created beside NS)
	// Mappings are the linuxbridge agent's physical_interface_mappings;
	// empty is PhysNet:PhysDev. A host bothnia shares with Neutron maps
	// only the networks that stay Neutron's.
	Mappings string
}

// StartHost runs the cloud's agents for one host in its namespace: the
// linuxbridge agent (PhysNet mapped to PhysDev, which the namespace must
// have) and, if asked, the DHCP agent with dnsmasq. It returns once the
// server reports every agent alive.
func (d *Deployment) StartHost(ctx context.Context, h Host) error {
	if !d.Agents {
		return fmt.Errorf("devcloud: the deployment in %s runs no message bus; start it with agents", d.Dir)
	}
	c := d.Clouds[h.Cloud]
	if c == nil {
		return fmt.Errorf("devcloud: no cloud %q in %s", h.Cloud, d.Dir)
	}
	bin := d.path("bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(bin, "ebtables"), ebtablesWrapper, 0o755); err != nil {
		return err
	}
	state := d.path("hosts", h.NS)
	if err := os.MkdirAll(filepath.Join(state, "lock"), 0o755); err != nil {
		return err
	}
	prefix := "host-" + h.NS
	if err := d.daemon(prefix+"-socat", h.NS, "socat", fmt.Sprintf("TCP-LISTEN:%d,bind=127.0.0.1,fork,reuseaddr", d.mqPort),
		"UNIX-CONNECT:"+d.path("amqp.sock")); err != nil {
		return err
	}
	common := fmt.Sprintf(`[DEFAULT]
host = %s
transport_url = %s
state_path = %s
log_file = LOGFILE
EXTRA

[agent]
root_helper = sudo
polling_interval = 2
report_interval = 5

[oslo_concurrency]
lock_path = %s

[experimental]
linuxbridge = True
`, h.Name, d.transportURL(), state, filepath.Join(state, "lock"))
	mappings := h.Mappings
	if mappings == "" {
		mappings = PhysNet + ":" + PhysDev
	}
	lb := common + fmt.Sprintf(`
[linux_bridge]
physical_interface_mappings = %s

[vxlan]
enable_vxlan = False

[securitygroup]
firewall_driver = iptables
enable_security_group = True
`, mappings)
	agents := []struct{ kind, bin, conf, typ string }{{"lb", "neutron-linuxbridge-agent", strings.Replace(lb, "EXTRA\n", "", 1), "Linux bridge agent"}}
	if h.DHCP {
		extra := `interface_driver = linuxbridge
dhcp_driver = neutron.agent.linux.dhcp.Dnsmasq
enable_isolated_metadata = False
force_metadata = False
`
		if d.DNSDomain != "" {
			extra += "dns_domain = " + d.DNSDomain + "\n"
		}
		agents = append(agents, struct{ kind, bin, conf, typ string }{"dhcp", "neutron-dhcp-agent", strings.Replace(common, "EXTRA\n", extra, 1), "DHCP agent"})
	}
	for _, a := range agents {
		conf := filepath.Join(state, a.kind+".conf")
		log := d.path("log", prefix+"-"+a.kind+".log")
		if err := os.WriteFile(conf, []byte(strings.Replace(a.conf, "LOGFILE", log, 1)), 0o644); err != nil {
			return err
		}
		// The wrapper goes first on sudo's secure_path, in the agent's
		// own mount namespace only ("ip netns exec" makes one).
		if err := d.daemon(prefix+"-"+a.kind, h.NS, "sh", "-c",
			fmt.Sprintf("mount --bind %s /usr/local/sbin && exec %s --config-file %s", bin, a.bin, conf)); err != nil {
			return err
		}
	}
	for _, a := range agents {
		if err := d.waitAgent(ctx, c, h.Name, a.typ, 90*time.Second); err != nil {
			return fmt.Errorf("devcloud: %s on %s: %w\n%s", a.typ, h.Name, err, readTail(d.path("log", prefix+"-"+a.kind+".log")))
		}
	}
	return nil
}

// QDHCP is the namespace a DHCP agent makes for a network: beside the
// host's, under the same /run/netns, and left there when the agent stops.
func QDHCP(networkID string) string { return "qdhcp-" + networkID }

// StopHost ends the agents of one namespace, and the dnsmasq servers its
// DHCP agent started (they leave the agent's session).
func (d *Deployment) StopHost(ns string) error {
	pids, _ := filepath.Glob(d.path("pid", "host-"+ns+"-*"))
	dnsmasqs, _ := filepath.Glob(d.path("hosts", ns, "dhcp", "*", "pid"))
	var err error
	for _, p := range append(pids, dnsmasqs...) {
		if e := stopPidFile(p); e != nil {
			err = e
		}
	}
	return err
}

// waitAgent waits until the server reports the host's agent of a type
// alive.
func (d *Deployment) waitAgent(ctx context.Context, c *Cloud, host, typ string, within time.Duration) error {
	deadline := time.Now().Add(within)
	q := url.Values{"host": {host}, "agent_type": {typ}}
	for {
		alive, err := agentAlive(ctx, c.Endpoint+"v2.0/agents?"+q.Encode())
		if err == nil && alive {
			return nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("not reported alive within %s", within)
			}
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func agentAlive(ctx context.Context, u string) (bool, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	var body struct {
		Agents []struct {
			Alive bool `json:"alive"`
		} `json:"agents"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return false, err
	}
	return len(body.Agents) > 0 && body.Agents[0].Alive, nil
}

// HostRunning reports whether the host's agents were started and still
// run.
func (d *Deployment) HostRunning(h Host) bool {
	kinds := []string{"socat", "lb"}
	if h.DHCP {
		kinds = append(kinds, "dhcp")
	}
	for _, k := range kinds {
		if !alive(d.path("pid", "host-"+h.NS+"-"+k)) {
			return false
		}
	}
	return true
}
