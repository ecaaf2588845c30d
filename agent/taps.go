package agent

import (
	"context"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/bothnia/bothnia/namespace"
)

// A port is pending while its tap does not exist: the hypervisor makes it
// after the port's binding, and Nova then waits (vif_plugging_timeout)
// for the port to go ACTIVE, which bothnia's ML2 driver says once the
// agent lists it up. Waiting for the next store change or resync to find
// the tap left a booting VM waiting for as long as nothing else happened
// in the fabric. The kernel tells the agent instead: a link appearing
// with a pending port's name makes the agent converge again at once.

// setPending records the taps the last converge could not plug yet.
func (a *Agent) setPending(taps map[string]bool) {
	a.pmu.Lock()
	a.pending = taps
	a.pmu.Unlock()
}

func (a *Agent) isPending(name string) bool {
	a.pmu.Lock()
	defer a.pmu.Unlock()
	return a.pending[name]
}

// pendingAppeared reports whether a pending port's tap exists now.
func (a *Agent) pendingAppeared() bool {
	a.pmu.Lock()
	names := make([]string, 0, len(a.pending))
	for n := range a.pending {
		names = append(names, n)
	}
	a.pmu.Unlock()
	if len(names) == 0 {
		return false
	}
	h, nsh, err := namespace.Netlink(a.cfg.Target.HostNS)
	if err != nil {
		return false
	}
	defer nsh.Close()
	defer h.Close()
	for _, n := range names {
		if _, err := h.LinkByName(n); err == nil {
			return true
		}
	}
	return false
}

// watchTaps follows the node's links until ctx ends and puts a token on
// a.taps when a pending port's tap appears. If the kernel's feed fails it
// tries again a second later; until then the resync finds the tap.
func (a *Agent) watchTaps(ctx context.Context) {
	for ctx.Err() == nil {
		a.followLinks(ctx)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (a *Agent) followLinks(ctx context.Context) {
	opts := netlink.LinkSubscribeOptions{ErrorCallback: func(err error) { a.log.Debug("link feed", "err", err) }}
	if ns := a.cfg.Target.HostNS; ns != "" {
		h, err := namespace.Open(ns)
		if err != nil {
			a.log.Warn("link feed: no namespace", "ns", ns, "err", err)
			return
		}
		defer h.Close()
		opts.Namespace = &h
	}
	ch := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	if err := netlink.LinkSubscribeWithOptions(ch, done, opts); err != nil {
		a.log.Warn("link feed: subscribe", "err", err)
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case u, ok := <-ch:
			if !ok {
				return
			}
			if u.Header.Type == unix.RTM_NEWLINK && u.Link != nil && a.isPending(u.Link.Attrs().Name) {
				select {
				case a.taps <- struct{}{}:
				default:
				}
			}
		}
	}
}
