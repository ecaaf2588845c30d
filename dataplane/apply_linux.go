// Package dataplane applies a node plan to the kernel: it reads what is
// there, compares it with the plan and changes only the difference.
//
// Design: the plan is the whole desired state of the node. Everything
// bothnia creates is marked as its own (links carry the ifalias "bothnia",
// routes the protocol number RouteProto, NAT lives in the table
// "bothnia-nat", namespaces carry the target's prefix) and only marked
// objects are ever changed or removed. Applying the same plan twice makes no
// change the second time; applying an empty node removes what bothnia owns.
package dataplane

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/bothnia/bothnia/namespace"
	"github.com/bothnia/bothnia/plan"
)

// Alias marks links bothnia owns.
const Alias = "bothnia"

// RouteProto marks routes bothnia owns (rtnetlink protocol number; iproute2
// shows it as "proto 98").
const RouteProto = 98

// Target places a node plan on this machine.
type Target struct {
	// HostNS is the named namespace that stands for the node's own
	// namespace: "" on a real host (this process's namespace), a per-node
	// namespace in the lab.
	HostNS string
	// Prefix goes before the names of the namespaces bothnia creates
	// (qrouter-…, qdhcp-…). Namespaces with the prefix are bothnia's and
	// removed when the plan no longer has them.
	Prefix string
	// HoldNewPorts leaves a VM's tap that is not in its bridge yet out of
	// it (reported pending): the node's firewall could not be programmed,
	// and a tap must never pass traffic before its rules are in.
	HoldNewPorts bool
}

// NS returns the machine's name for a plan namespace.
func (t Target) NS(planNS string) string {
	if planNS == plan.HostNS {
		return t.HostNS
	}
	return t.Prefix + planNS
}

// Result says what an apply did.
type Result struct {
	Changes []string // one line per kernel change, empty when nothing differed
	Pending []string // VM ports the plan names that do not exist yet
}

type applier struct {
	t       Target
	res     *Result
	handles map[string]*netlink.Handle // by plan namespace
	nss     map[string]netns.NsHandle
	// neighDump is one neighbour dump per namespace and family, by device:
	// netlink's NeighList dumps the whole table and keeps one device's, so
	// a call per device read every entry of the node once per device.
	neighDump map[string]map[int]map[int][]netlink.Neigh
}

// neighsOf returns a device's neighbour (or, with AF_BRIDGE, forwarding)
// entries from the apply's one dump of its namespace and family. The dump
// is taken before this apply changes the device's entries; each device is
// read once per apply, and the forwarding entries of an uplink are read
// twice over disjoint parts (fdb: tunnel entries; suppress: static master
// entries without a destination), so none of them sees its own writes.
func (a *applier) neighsOf(h *netlink.Handle, ns string, index, family int) ([]netlink.Neigh, error) {
	if a.neighDump == nil {
		a.neighDump = map[string]map[int]map[int][]netlink.Neigh{}
	}
	byFam := a.neighDump[ns]
	if byFam == nil {
		byFam = map[int]map[int][]netlink.Neigh{}
		a.neighDump[ns] = byFam
	}
	byDev, ok := byFam[family]
	if !ok {
		all, err := retry(func() ([]netlink.Neigh, error) { return h.NeighList(0, family) })
		if err != nil {
			return nil, err
		}
		byDev = map[int][]netlink.Neigh{}
		for _, n := range all {
			byDev[n.LinkIndex] = append(byDev[n.LinkIndex], n)
		}
		byFam[family] = byDev
	}
	return byDev[index], nil
}

func (a *applier) changef(ns, format string, args ...any) {
	where := a.t.NS(ns)
	if where == "" {
		where = "host"
	}
	a.res.Changes = append(a.res.Changes, where+": "+fmt.Sprintf(format, args...))
}

// Apply makes the node's namespaces match the plan and reports what it
// changed. It keeps going after a failure and returns every error joined.
func Apply(node *plan.Node, t Target) (*Result, error) {
	a := &applier{t: t, res: &Result{}, handles: map[string]*netlink.Handle{}, nss: map[string]netns.NsHandle{}}
	defer a.close()

	// Namespaces first: veths are created with their peer already in place.
	for _, ns := range node.Namespaces {
		if ns.Name == plan.HostNS {
			continue
		}
		made, err := namespace.Create(t.NS(ns.Name))
		if err != nil {
			return a.res, err
		}
		if made {
			a.changef(ns.Name, "netns add")
		}
	}
	for _, ns := range node.Namespaces {
		h, nsh, err := namespace.Netlink(t.NS(ns.Name))
		if err != nil {
			return a.res, err
		}
		a.handles[ns.Name], a.nss[ns.Name] = h, nsh
	}
	if _, ok := a.handles[plan.HostNS]; !ok {
		h, nsh, err := namespace.Netlink(t.HostNS)
		if err != nil {
			return a.res, err
		}
		a.handles[plan.HostNS], a.nss[plan.HostNS] = h, nsh
	}

	var errs []error
	for i := range node.Namespaces {
		ns := &node.Namespaces[i]
		if ns.Name != plan.HostNS {
			// Namespaces bothnia made are bothnia's whole: loopback too.
			if err := a.loopback(ns.Name); err != nil {
				errs = append(errs, err)
			}
		}
		if err := a.links(ns); err != nil {
			errs = append(errs, fmt.Errorf("%s: links: %w", a.t.NS(ns.Name), err))
		}
	}
	if err := a.ports(node); err != nil {
		errs = append(errs, fmt.Errorf("ports: %w", err))
	}
	for i := range node.Namespaces {
		ns := &node.Namespaces[i]
		where := a.t.NS(ns.Name)
		if err := a.prune(ns, node.Ports); err != nil {
			errs = append(errs, fmt.Errorf("%s: prune: %w", where, err))
		}
		if err := a.routes(ns); err != nil {
			errs = append(errs, fmt.Errorf("%s: routes: %w", where, err))
		}
		if ns.Name != plan.HostNS || ns.Forwarding {
			if err := a.forwarding(ns); err != nil {
				errs = append(errs, fmt.Errorf("%s: forwarding: %w", where, err))
			}
		}
		if err := a.snat(ns); err != nil {
			errs = append(errs, fmt.Errorf("%s: snat: %w", where, err))
		}
	}
	if err := a.staleNamespaces(node); err != nil {
		errs = append(errs, err)
	}
	return a.res, errors.Join(errs...)
}

func (a *applier) close() {
	for _, h := range a.handles {
		h.Close()
	}
	for _, n := range a.nss {
		n.Close()
	}
}

// staleNamespaces removes bothnia's namespaces the plan no longer has.
func (a *applier) staleNamespaces(node *plan.Node) error {
	want := map[string]bool{}
	for _, ns := range node.Namespaces {
		want[a.t.NS(ns.Name)] = true
	}
	var errs []error
	for _, role := range []string{"qrouter-", "qdhcp-"} {
		have, err := namespace.List(a.t.Prefix + role)
		if err != nil {
			return err
		}
		for _, n := range have {
			if want[n] {
				continue
			}
			if err := namespace.Delete(n); err != nil {
				errs = append(errs, err)
				continue
			}
			a.res.Changes = append(a.res.Changes, n+": netns del")
		}
	}
	return errors.Join(errs...)
}

func (a *applier) loopback(ns string) error {
	h := a.handles[ns]
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("%s: lo: %w", a.t.NS(ns), err)
	}
	return a.up(h, ns, lo)
}

func (a *applier) forwarding(ns *plan.Namespace) error {
	want := "0"
	if ns.Forwarding {
		want = "1"
	}
	name := a.t.NS(ns.Name)
	have, err := namespace.Sysctl(name, "net.ipv4.ip_forward")
	if err != nil {
		return err
	}
	if have == want {
		return nil
	}
	if err := namespace.SetSysctl(name, "net.ipv4.ip_forward", want); err != nil {
		return err
	}
	a.changef(ns.Name, "sysctl net.ipv4.ip_forward=%s", want)
	return nil
}

// retry repeats a netlink dump the kernel interrupted because the table
// changed under it (netlink.ErrDumpInterrupted), as plugins' netlinksafe does.
func retry[T any](f func() (T, error)) (T, error) {
	var v T
	var err error
	for i := 0; i < 5; i++ {
		v, err = f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}

func owned(l netlink.Link) bool { return l.Attrs().Alias == Alias }
