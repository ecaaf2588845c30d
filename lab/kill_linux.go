package lab

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/bothnia/bothnia/dataplane"
	"github.com/bothnia/bothnia/namespace"
	"github.com/bothnia/bothnia/node"
	"github.com/bothnia/bothnia/spec"
)

// Pulling a node's plug, as a crash would, and putting it back: the
// failure the router, DHCP and DNS must survive (issue 20). A killed node's
// agent and servers die at once (SIGKILL, no goodbye to the store: its
// status key lives until its lease runs out) and every link of its
// namespaces goes down, the underlay and the router's external leg
// included, so nothing reaches it and it reaches nothing. Revive brings
// the lab's links up (the cabling and the VMs' taps), leaves bothnia's to
// its agent, and starts the agent and servers again; the rest of the
// kernel state a real reboot would lose (bridges, rules, conntrack) stays,
// and the agent converges it as after a restart.

func (l *Lab) killedFile(nodeName string) string {
	return filepath.Join(l.stateDir(), "killed-"+nodeName)
}

// KillNode pulls a node's plug. It returns what it stopped; a node killed
// already is left as it is.
func (l *Lab) KillNode(nodeName string) ([]string, error) {
	unlock, err := l.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := l.isNode(nodeName); err != nil {
		return nil, err
	}
	if fileExists(l.killedFile(nodeName)) {
		return nil, nil
	}
	var done, record []string
	svcs, err := l.nodeServices(nodeName)
	if err != nil {
		return nil, err
	}
	for _, sv := range svcs {
		if pid, ok := running(l.pidFile(sv.name)); ok {
			// The whole process group (each service is a session of its
			// own): a crash leaves no child behind to say goodbye, as
			// keepalived's VRRP process would.
			if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil {
				return done, fmt.Errorf("lab: kill %s: %w", sv.name, err)
			}
			done = append(done, "kill "+sv.name)
			record = append(record, "service "+sv.name)
		}
		_ = os.Remove(l.pidFile(sv.name))
	}
	// Every link that is up goes down, and is remembered for revive.
	var downed int
	for _, ns := range l.nodeNamespaces(nodeName) {
		h, nsh, err := namespace.Netlink(ns)
		if err != nil {
			return done, err
		}
		links, err := h.LinkList()
		if err == nil {
			for _, link := range links {
				at := link.Attrs()
				if at.Name == "lo" || at.Flags&net.FlagUp == 0 {
					continue
				}
				if e := h.LinkSetDown(link); e != nil {
					err = fmt.Errorf("lab: %s: link set %s down: %w", ns, at.Name, e)
					break
				}
				// bothnia's own links come back as the node's agent
				// plans them, as after a reboot: a router replica that
				// served before the kill must not answer before its
				// agent knows whether it still does.
				if at.Alias != dataplane.Alias {
					record = append(record, "link "+ns+" "+at.Name)
				}
				downed++
			}
		}
		h.Close()
		nsh.Close()
		if err != nil {
			return done, err
		}
	}
	done = append(done, fmt.Sprintf("%d links down", downed))
	return done, os.WriteFile(l.killedFile(nodeName), []byte(strings.Join(record, "\n")), 0o644)
}

// ReviveNode puts a killed node's plug back: its links up, its agent and
// servers started. It returns what it did; a node not killed is left as it
// is.
func (l *Lab) ReviveNode(nodeName string) ([]string, error) {
	unlock, err := l.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := l.isNode(nodeName); err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(l.killedFile(nodeName))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var done []string
	names := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		kind, rest, _ := strings.Cut(line, " ")
		if kind == "service" {
			names[rest] = true
			continue
		}
		ns, name, ok := strings.Cut(rest, " ")
		if kind != "link" || !ok {
			continue
		}
		h, nsh, err := namespace.Netlink(ns)
		if err != nil {
			return done, err
		}
		link, err := h.LinkByName(name)
		if err == nil {
			err = h.LinkSetUp(link)
		}
		h.Close()
		nsh.Close()
		if err != nil {
			return done, fmt.Errorf("lab: %s: link set %s up: %w", ns, name, err)
		}
	}
	svcs, err := l.nodeServices(nodeName)
	if err != nil {
		return done, err
	}
	var again []service
	for _, sv := range svcs {
		if names[sv.name] {
			again = append(again, sv)
		}
	}
	started, err := l.startServices(again)
	done = append(done, started...)
	if err != nil {
		return done, err
	}
	return done, os.Remove(l.killedFile(nodeName))
}

// Killed reports whether a node's plug is pulled.
func (l *Lab) Killed(nodeName string) bool { return fileExists(l.killedFile(nodeName)) }

func (l *Lab) isNode(nodeName string) error {
	s, err := l.Spec()
	if err != nil {
		return err
	}
	if s.Node(nodeName) == nil {
		return fmt.Errorf("lab: no node %q; the lab has %v", nodeName, s.NodeNames())
	}
	return nil
}

// nodeServices are the processes the lab runs for a node: its agent (if
// the lab runs agents and the node is bothnia's) and the DHCP and DNS
// servers in its namespaces. Kill stops those that run; revive starts
// those kill stopped.
func (l *Lab) nodeServices(nodeName string) ([]service, error) {
	s, _, fab, err := l.running()
	if err != nil {
		return nil, err
	}
	fabricFile, err := l.writeFabric(s)
	if err != nil {
		return nil, err
	}
	var out []service
	for _, sv := range l.services(fab, fabricFile) {
		if strings.HasPrefix(sv.ns, l.SubPrefix(nodeName)) {
			out = append(out, sv)
		}
	}
	if st, err := fab.Node(nodeName); err == nil && !l.cloudRuns(st) {
		out = append(out, l.agent(nodeName, st.Plan.Foreign))
	}
	return out, nil
}

// running is the running lab's spec, as recorded and as the lab builds
// it, and the nodes' desired states.
func (l *Lab) running() (*spec.Spec, *spec.Spec, *node.Fabric, error) {
	s, err := l.Spec()
	if err != nil {
		return nil, nil, nil, err
	}
	ls, err := LabSpec(s)
	if err != nil {
		return nil, nil, nil, err
	}
	fab, err := node.Desired(ls)
	if err != nil {
		return nil, nil, nil, err
	}
	return s, ls, fab, nil
}

// nodeNamespaces are a node's own namespace and its router and DHCP ones.
func (l *Lab) nodeNamespaces(nodeName string) []string {
	subs, _ := namespace.List(l.SubPrefix(nodeName))
	return append([]string{l.NodeNS(nodeName)}, subs...)
}
