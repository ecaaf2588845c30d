package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/bothnia/bothnia/namespace"
	"github.com/bothnia/bothnia/node"
	"github.com/bothnia/bothnia/plan"
	"github.com/bothnia/bothnia/spec"
)

// Exe is the bothnia binary the lab starts its DHCP and DNS servers with;
// empty means this program. Tests, which are not bothnia, build it first.
var Exe string

// service is a server the lab runs in one of its namespaces.
type service struct {
	name string // dhcp-knox, dns
	ns   string
	args []string
	// netOnly runs the process in the namespace's network only, sharing
	// the host's mounts (see startServices).
	netOnly bool
	// enters starts the process where the lab runs, for it enters ns
	// itself (and becomes another program there: conntrackd).
	enters bool
	// bin runs this program instead of bothnia (keepalived).
	bin string
}

// services are the DHCP and DNS servers the nodes' states place, each to
// run in its DHCP namespace of the lab.
func (l *Lab) services(fab *node.Fabric, fabricFile string) []service {
	var out []service
	for _, st := range fab.Nodes {
		if l.cloudRuns(st) {
			continue // the site's Neutron serves DHCP there
		}
		for _, sv := range st.Services {
			ns := l.SubPrefix(st.Name) + sv.Namespace
			switch sv.Kind {
			case "conntrackd":
				if l.KeepalivedPeer {
					out = append(out, l.keepalived(st.Name, ns, sv))
					continue
				}
				if l.NoStateSync {
					continue
				}
				out = append(out, service{name: "conntrackd-" + st.Name, ns: ns, enters: true, args: []string{
					"router", "conntrackd", "--spec", fabricFile, "--node", st.Name, "--ns-prefix", l.SubPrefix(st.Name),
					"--run-dir", l.conntrackdDir(st.Name)}})
			case "dhcp":
				out = append(out, service{name: sv.Name(), ns: ns,
					args: []string{"dhcp", "--spec", fabricFile, "--site", sv.Site, "--address", sv.Addr, "--iface", sv.Iface, "--debug"}})
			default:
				out = append(out, service{name: sv.Name(), ns: ns, args: []string{"dns", "--spec", fabricFile, "--listen", net.JoinHostPort(sv.Addr, "53")}})
			}
		}
	}
	return out
}

// StopStateSync stops every router replica's conntrackd, and with
// NoStateSync set they stay stopped (revive leaves them out).
func (l *Lab) StopStateSync() error {
	matches, _ := filepath.Glob(filepath.Join(l.stateDir(), "conntrackd-*.pid"))
	var errs []error
	for _, f := range matches {
		errs = append(errs, stop(f, time.Second))
	}
	return errors.Join(errs...)
}

// conntrackdDir is where a node's router replica's conntrackd keeps its
// configuration, lock, socket and log.
func (l *Lab) conntrackdDir(node string) string {
	return filepath.Join(l.stateDir(), "conntrackd-"+node)
}

// ServiceLog is the log file of a lab server (dhcp-<site>, dns).
func (l *Lab) ServiceLog(name string) string { return filepath.Join(l.stateDir(), name+".log") }

func (l *Lab) pidFile(name string) string { return filepath.Join(l.stateDir(), name+".pid") }

func running(pidFile string) (int, bool) {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, false
	}
	// The pid is still the lab's process: bothnia, or what a service
	// became (conntrackd, with its configuration in the lab's directory).
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return pid, err == nil && (bytes.Contains(cmdline, []byte("bothnia")) || bytes.Contains(cmdline, []byte(filepath.Dir(pidFile))))
}

// startServices starts each server that is not running yet, as
// `ip netns exec NS bothnia ...`: the whole process lives in the namespace,
// so the DNS forwarder's upstream sockets can never open in the root one.
func (l *Lab) startServices(svcs []service) ([]string, error) {
	exe := Exe
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	var changes []string
	for _, sv := range svcs {
		if _, ok := running(l.pidFile(sv.name)); ok {
			continue
		}
		logf, err := os.OpenFile(l.ServiceLog(sv.name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return changes, err
		}
		prog := exe
		if sv.bin != "" {
			prog = sv.bin
		}
		cmd := exec.Command("ip", append([]string{"netns", "exec", sv.ns, prog}, sv.args...)...)
		switch {
		case sv.ns == "" || sv.enters: // the store: a unix socket, no network of its own
			cmd = exec.Command(exe, sv.args...)
		case sv.netOnly:
			// An agent creates the node's router and DHCP namespaces, whose
			// mounts under /run/netns must be seen by everyone: it enters
			// the node's network namespace only, not the private mount
			// namespace "ip netns exec" gives a process.
			cmd = exec.Command("nsenter", append([]string{"--net=" + filepath.Join(namespace.Dir, sv.ns), "--", exe}, sv.args...)...)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		err = cmd.Start()
		logf.Close()
		if err != nil {
			return changes, fmt.Errorf("lab: start %s: %w", sv.name, err)
		}
		if err := os.WriteFile(l.pidFile(sv.name), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
			return changes, err
		}
		go func() { _ = cmd.Wait() }() // reap it if it dies while we run
		where := sv.ns
		if where == "" {
			where = "host"
		}
		changes = append(changes, fmt.Sprintf("%s: start %s", where, sv.name))
	}
	return changes, nil
}

// stopServices ends the lab's servers.
func (l *Lab) stopServices() error {
	matches, _ := filepath.Glob(filepath.Join(l.stateDir(), "*.pid"))
	var errs []error
	for _, f := range matches {
		errs = append(errs, stop(f, time.Second))
	}
	return errors.Join(errs...)
}

// stop ends the process of a pid file as systemctl stop does: SIGTERM,
// then SIGKILL after grace.
func stop(pidFile string, grace time.Duration) error {
	var err error
	if pid, ok := running(pidFile); ok {
		err = syscall.Kill(pid, syscall.SIGTERM)
		for deadline := time.Now().Add(grace); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if _, ok := running(pidFile); !ok {
				break
			}
		}
		if _, ok := running(pidFile); ok {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	_ = os.Remove(pidFile)
	return err
}

// writeFabric saves the spec as the lab builds it (VXLAN, so MTU 1450)
// for the servers to read.
func (l *Lab) writeFabric(s *spec.Spec) (string, error) {
	b, err := yaml.Marshal(s)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(l.stateDir(), 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(l.stateDir(), "fabric.yaml")
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, b) {
		return path, nil
	}
	return path, os.WriteFile(path, b, 0o644)
}

// DHCPScript is what udhcpc runs on each event: it configures the VM's
// interface from the lease and records the lease for check. It touches
// nothing outside the VM's namespace (no resolv.conf: the namespaces share
// the host's files).
const DHCPScript = `#!/bin/sh
case "$1" in
deconfig)
	ip -4 addr flush dev "$interface"
	ip link set "$interface" up
	;;
bound|renew)
	event=$1
	[ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
	ip addr replace "$ip/$mask" dev "$interface"
	if [ -n "$staticroutes" ]; then
		set -- $staticroutes
		while [ $# -ge 2 ]; do ip route replace "$1" via "$2" dev "$interface"; shift 2; done
	elif [ -n "$router" ]; then
		for r in $router; do ip route replace default via "$r" dev "$interface"; break; done
	fi
	{
		echo "event=$event"; echo "ip=$ip"; echo "mask=$mask"; echo "router=$router"; echo "dns=$dns"
		echo "domain=$domain"; echo "search=$search"; echo "mtu=$mtu"; echo "serverid=$serverid"
		echo "hostname=$hostname"; echo "lease=$lease"; echo "staticroutes=$staticroutes"
	} > "$LEASE_FILE.tmp" && mv "$LEASE_FILE.tmp" "$LEASE_FILE"
	# ip netns exec bind-mounts /etc/netns/<ns>/resolv.conf over the
	# host's for commands run in the VM: the VM's own resolver setup.
	if [ -n "$RESOLV_CONF" ] && [ -n "$dns" ]; then
		mkdir -p "$(dirname "$RESOLV_CONF")"
		# A server that sends no search list (Neutron's dnsmasq) gives the
		# domain: resolvers search it, as a VM's own would.
		s=${search:-$domain}
		{ [ -n "$s" ] && echo "search $s"; for d in $dns; do echo "nameserver $d"; done; } > "$RESOLV_CONF"
	fi
	;;
esac
exit 0
`

// NetnsEtc is where iproute2 keeps per-namespace files that
// `ip netns exec` mounts over /etc.
const NetnsEtc = "/etc/netns"

// ResolvConf is the resolv.conf commands in a lab VM see.
func (l *Lab) ResolvConf(vm string) string { return filepath.Join(NetnsEtc, l.VMNS(vm), "resolv.conf") }

// LeaseFile is where a lab VM's DHCP client records its lease.
func (l *Lab) LeaseFile(vm string) string { return filepath.Join(l.stateDir(), "lease-"+vm) }

// DHCPVMs are the VMs the lab configures by DHCP: those of the network the
// sites' DHCP servers serve, on a site that has one.
func DHCPVMs(s *spec.Spec) map[string]bool {
	out := map[string]bool{}
	n := plan.InfraNetwork(s)
	if n == nil {
		return out
	}
	for _, vm := range n.VMs {
		if st := s.Sites[s.NodeSite(vm.Node)]; st != nil && st.DHCP != nil {
			out[vm.Name] = true
		}
	}
	return out
}

// runDHCPClients runs busybox udhcpc once in every DHCP VM that does not
// hold its address yet, all at once, and fails if any gets no lease.
func (l *Lab) runDHCPClients(ports []plan.Port, dhcpVMs map[string]bool) ([]string, error) {
	script := filepath.Join(l.stateDir(), "udhcpc.script")
	if err := os.WriteFile(script, []byte(DHCPScript), 0o755); err != nil {
		return nil, err
	}
	var mu sync.Mutex
	var changes []string
	var errs []error
	var wg sync.WaitGroup
	for _, p := range ports {
		if !dhcpVMs[p.VM] || l.hasAddr(p.VM, p.IP) {
			continue
		}
		wg.Add(1)
		go func(p plan.Port) {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, "udhcpc", "-i", VMDev, "-f", "-q", "-n", "-t", "5", "-T", "1",
				"-s", script, "-O", "mtu", "-O", "staticroutes", "-O", "search", "-O", "domain")
			cmd.Env = append(os.Environ(), "LEASE_FILE="+l.LeaseFile(p.VM), "RESOLV_CONF="+l.ResolvConf(p.VM))
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := namespace.Do(l.VMNS(p.VM), cmd.Start)
			if err == nil {
				err = cmd.Wait()
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("lab: dhcp for %s: %w: %s", p.VM, err, strings.TrimSpace(out.String())))
				return
			}
			changes = append(changes, l.VMNS(p.VM)+": dhcp lease")
		}(p)
	}
	wg.Wait()
	return changes, errors.Join(errs...)
}

func (l *Lab) hasAddr(vm, cidr string) bool {
	h, nsh, err := namespace.Netlink(l.VMNS(vm))
	if err != nil {
		return false
	}
	defer nsh.Close()
	defer h.Close()
	link, err := h.LinkByName(VMDev)
	if err != nil {
		return false
	}
	addrs, _ := h.AddrList(link, 2)
	for _, a := range addrs {
		if a.IPNet.String() == cidr {
			return true
		}
	}
	return false
}
