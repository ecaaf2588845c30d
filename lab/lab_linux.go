package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/bothnia/bothnia/dataplane"
	"github.com/bothnia/bothnia/namespace"
	"github.com/bothnia/bothnia/node"
	"github.com/bothnia/bothnia/openstack"
	"github.com/bothnia/bothnia/plan"
	"github.com/bothnia/bothnia/spec"
)

// StateDir keeps each running lab's spec, so that check, exec and status
// need no arguments. It lives in /run: namespaces do not survive a reboot
// and neither should the record of them.
var StateDir = "/run/bothnia/lab"

// LabSpec returns the spec as the lab builds it: every segment carried as
// VXLAN over the lab's underlay, since this kernel has no 802.1Q devices.
func LabSpec(s *spec.Spec) (*spec.Spec, error) {
	c := *s
	c.Link.Mode, c.Link.Device = "vxlan", UnderlayDev
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Report says what Up did.
type Report struct {
	Changes []string
	Pending []string
	// Foreign says how the foreign sites run: by real Neutron, or by the
	// stand-in and why ("" without foreign sites).
	Foreign string
}

// Up builds the lab for the spec, or brings an existing one in line with
// it. Calling it again with the same spec changes nothing. Commands that
// change one lab (up, down, vm add, vm del) run one at a time, in this
// process or any other.
func (l *Lab) Up(s *spec.Spec, specYAML []byte) (*Report, error) {
	unlock, err := l.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	return l.up(s, specYAML)
}

// lock takes the lab's lock: an exclusive flock on a file beside its
// state, so that two commands never read the same spec, pick the same free
// address and write over each other's VM. It waits for the holder.
func (l *Lab) lock() (func(), error) {
	if err := os.MkdirAll(StateDir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(StateDir, l.Prefix+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lab: lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lab: lock %s: %w", f.Name(), err)
	}
	return func() { f.Close() }, nil // closing the file releases the lock
}

func (l *Lab) up(s *spec.Spec, specYAML []byte) (*Report, error) {
	rep := &Report{}
	l.foreign, l.foreignWhy = l.foreignMode(s)
	switch l.foreign {
	case ForeignNeutron:
		rep.Foreign = "run by real Neutron (neutron-server, a linuxbridge agent per node, a DHCP agent with dnsmasq)"
	case ForeignStandIn:
		rep.Foreign = "stood in for by bothnia's agent (plain bridges, Neutron's iptables layout): " + l.foreignWhy
	}
	// Recorded first: a failed up still leaves what it started to Down.
	if err := l.saveForeignMode(l.foreign); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var neutron *neutronSites
	if l.foreign == ForeignNeutron {
		mtu, err := LabSpec(s)
		if err != nil {
			return nil, err
		}
		if s, neutron, err = l.neutronUp(ctx, s, mtu.NetworkMTU()); err != nil {
			return nil, err
		}
	}
	ls, err := LabSpec(s)
	if err != nil {
		return nil, err
	}
	fab, err := node.Desired(ls)
	if err != nil {
		return nil, err
	}
	p := fab.Plan()
	e := newEnsurer()
	defer e.close()
	if err := l.cabling(e, ls, p); err != nil {
		return nil, err
	}
	if neutron != nil {
		if err := l.foreignCabling(e, ls, p); err != nil {
			return nil, err
		}
		started, err := l.foreignHosts(ctx, neutron.d, ls)
		rep.Changes = append(rep.Changes, started...)
		if err != nil {
			return rep, err
		}
		for sn, c := range neutron.clouds {
			if d := ls.Sites[sn].DHCP; d != nil {
				if err := scheduleDHCP(ctx, c, d.Node, neutron.netIDs[sn]); err != nil {
					return rep, err
				}
			}
		}
	}
	rep.Changes = append(rep.Changes, e.changes...)
	e.changes = nil
	if l.Agents {
		// The control plane: etcd, the spec pushed, an agent per node.
		cp, err := l.controlPlane(fab)
		rep.Changes = append(rep.Changes, cp...)
		if err != nil {
			return rep, err
		}
	} else {
		// The same seam a real host's apply and agent use, per node namespace.
		var errs []error
		for _, st := range fab.Nodes {
			if l.cloudRuns(st) {
				continue
			}
			c := &node.Converger{Target: dataplane.Target{HostNS: l.NodeNS(st.Name), Prefix: l.SubPrefix(st.Name)}, StandIn: st.Plan.Foreign}
			res, err := c.Converge(st)
			c.Close()
			rep.Changes = append(rep.Changes, res.Changes...)
			rep.Pending = append(rep.Pending, res.Pending...)
			if err != nil {
				errs = append(errs, err)
			}
		}
		if err := errors.Join(errs...); err != nil {
			return rep, err
		}
	}
	if neutron != nil {
		// Nova's part, then the foreign clouds admit the other sites'
		// members of their remote groups (bothnia openstack sync).
		if _, err := l.plugForeign(ctx, e, neutron.clouds, ls, p, neutron.netIDs); err != nil {
			return rep, err
		}
		rep.Changes = append(rep.Changes, e.changes...)
		done, err := openstack.SyncSites(ctx, ls, neutron.clouds, openstack.ByPrefixes)
		for _, acts := range done {
			for _, a := range acts {
				rep.Changes = append(rep.Changes, "sync: "+a.String())
			}
		}
		if err != nil {
			return rep, err
		}
		for sn, c := range neutron.clouds {
			if d := ls.Sites[sn].DHCP; d != nil {
				if err := waitDHCP(ctx, c, d.Address, 90*time.Second); err != nil {
					return rep, err
				}
			}
		}
	}
	if len(rep.Changes) > 0 {
		if err := l.waitReady(3 * time.Second); err != nil {
			return rep, err
		}
	}
	if specYAML != nil {
		if err := l.save(specYAML); err != nil {
			return rep, err
		}
	}
	fabricFile, err := l.writeFabric(ls)
	if err != nil {
		return rep, err
	}
	started, err := l.startServices(l.services(fab, fabricFile))
	rep.Changes = append(rep.Changes, started...)
	if err != nil {
		return rep, err
	}
	var ports []plan.Port
	for _, n := range p.Nodes {
		ports = append(ports, n.Ports...)
	}
	leased, err := l.runDHCPClients(ports, DHCPVMs(ls))
	rep.Changes = append(rep.Changes, leased...)
	return rep, err
}

// cloudRuns reports whether a node's site is run by its own cloud's
// Neutron in this lab, so bothnia neither converges it nor stands in.
func (l *Lab) cloudRuns(st *node.State) bool {
	if l.foreign == "" {
		l.foreign = l.ForeignMode()
	}
	return st.Plan.Foreign && l.foreign == ForeignNeutron
}

// waitReady waits until every link of the lab that is set up has come up
// operationally. The kernel's linkwatch gives a new link its queueing
// discipline and tells the bridge its port has carrier up to a second after
// "ip link set up"; until then frames are dropped, and a probe sent at once
// would lose its first packet.
func (l *Lab) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		pending, err := l.linksNotReady()
		if err != nil || len(pending) == 0 {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lab: links still not operational after %s: %s", timeout, strings.Join(pending, ", "))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (l *Lab) linksNotReady() ([]string, error) {
	nss, err := namespace.List(l.All())
	if err != nil {
		return nil, err
	}
	var pending []string
	for _, ns := range nss {
		h, nsh, err := namespace.Netlink(ns)
		if err != nil {
			return nil, err
		}
		links, err := h.LinkList()
		h.Close()
		nsh.Close()
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			return nil, err
		}
		for _, ln := range links {
			a := ln.Attrs()
			if a.Flags&net.FlagUp == 0 || a.Name == "lo" {
				continue
			}
			if a.OperState != netlink.OperUp && a.OperState != netlink.OperUnknown {
				pending = append(pending, ns+"/"+a.Name)
			}
		}
	}
	return pending, nil
}

func run(steps []func() error) error {
	for _, f := range steps {
		if err := f(); err != nil {
			return err
		}
	}
	return nil
}

// Down removes every namespace of the lab, and with them every link,
// route and rule it held, and the saved spec. It returns what it removed.
func (l *Lab) Down() ([]string, error) {
	unlock, err := l.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	stopErr := errors.Join(l.stopServices(), l.stopNeutron())
	names, err := namespace.List(l.All())
	if err != nil {
		return nil, err
	}
	var errs []error
	var gone []string
	for _, n := range names {
		if err := namespace.Delete(n); err != nil {
			errs = append(errs, err)
			continue
		}
		gone = append(gone, n)
	}
	if err := os.RemoveAll(l.stateDir()); err != nil {
		errs = append(errs, err)
	}
	etc, _ := filepath.Glob(filepath.Join(NetnsEtc, l.All()+"*"))
	for _, d := range etc {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
		}
	}
	if len(etc) > 0 {
		_ = os.Remove(NetnsEtc) // only if empty: others' files stay
	}
	return gone, errors.Join(append(errs, stopErr)...)
}

func (l *Lab) stateDir() string { return filepath.Join(StateDir, l.Prefix) }

func (l *Lab) save(specYAML []byte) error {
	if err := os.MkdirAll(l.stateDir(), 0o755); err != nil {
		return fmt.Errorf("lab: save spec: %w", err)
	}
	return os.WriteFile(filepath.Join(l.stateDir(), "spec.yaml"), specYAML, 0o644)
}

// Spec returns the spec the running lab was built from.
func (l *Lab) Spec() (*spec.Spec, error) {
	path := filepath.Join(l.stateDir(), "spec.yaml")
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("lab %s is not up (no %s); run bothnia lab up SPEC first", l.Prefix, path)
	}
	return spec.Load(path)
}

// VMNamespace names the namespace of a lab VM, or errs listing the VMs.
func (l *Lab) VMNamespace(s *spec.Spec, vm string) (string, error) {
	if v, _ := s.VM(vm); v != nil {
		return l.VMNS(vm), nil
	}
	var names []string
	for _, n := range s.Networks {
		for _, v := range n.VMs {
			names = append(names, v.Name)
		}
	}
	return "", fmt.Errorf("lab: no VM %q; the spec has %s", vm, strings.Join(names, ", "))
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
