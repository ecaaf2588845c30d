package agent

// The node's part in its router's election: where the fabric puts a
// replica of the router on this node, the agent runs for the router's key
// (package replica), plans its legs up only while it serves, takes them
// down at once when it stops, and announces a takeover.

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/bothnia/bothnia/dataplane"
	"github.com/bothnia/bothnia/internal/packetsock"
	"github.com/bothnia/bothnia/namespace"
	"github.com/bothnia/bothnia/node"
	"github.com/bothnia/bothnia/plan"
	"github.com/bothnia/bothnia/replica"
	"github.com/bothnia/bothnia/spec"
)

// routerPart is the agent's running election for one router.
type routerPart struct {
	key    string           // router name and what Healthy checks: restart on change
	el     *replica.Elector // nil: another system elects (Config.ExternalElection)
	cancel context.CancelFunc
	done   chan struct{}
	// claimed is whether the store names this node, where another
	// system elects.
	claimed bool

	mu        sync.Mutex
	ns        string   // the router's namespace (plan name)
	legs      []string // its fabric and external legs
	announced bool     // a takeover was announced since serving began
	// standing is set once a standby asked the serving replica for its
	// connection tracking table (standBy).
	standing bool
}

// serving is whether this node's replica serves: its elector's word, or
// the store's where another system elects.
func (p *routerPart) serving() bool {
	if p.el != nil {
		return p.el.Serving()
	}
	return p.claimed
}

// routerElection starts, keeps or stops this node's election for the
// fabric's router.
func (a *Agent) routerElection(s *spec.Spec) {
	want := ""
	if r := s.Router; r != nil && r.Replicated() && slices.Contains(r.Replicas(), a.cfg.Node) {
		want = r.Name + "\x00" + s.Link.Device + "\x00" + r.External.Device
	}
	if a.router != nil && a.router.key == want {
		return
	}
	if a.router != nil {
		a.router.cancel()
		<-a.router.done
		a.router = nil
	}
	if want == "" || a.cli == nil {
		return
	}
	r := s.Router
	part := &routerPart{key: want, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(a.ctx)
	part.cancel = cancel
	if a.cfg.ExternalElection {
		// The store's key is written by another system (keepalived's
		// notify, through bothnia router claim): only follow it.
		a.router = part
		close(part.done)
		return
	}
	part.el = replica.New(replica.Config{
		Client:  a.cli,
		Router:  r.Name,
		Node:    a.cfg.Node,
		Healthy: a.healthy(ctx, []string{s.Link.Device, r.External.Device}),
		Serve:   func(on bool) { a.serveRouter(part, on) },
		Log:     a.log,
	})
	a.router = part
	go func() {
		defer close(part.done)
		part.el.Run(ctx)
	}()
}

// routerView makes the fabric's view of the router this agent's: the
// store may lag the election by a watch event, and a replica that was
// fenced off the store must not plan its legs up on the store's word.
func (a *Agent) routerView(s *spec.Spec) {
	r := s.Router
	if a.router == nil || r == nil {
		return
	}
	if a.router.el == nil {
		a.router.claimed = r.Active == a.cfg.Node
		return
	}
	switch serving := a.router.el.Serving(); {
	case serving:
		r.Active = a.cfg.Node
	case r.Active == a.cfg.Node:
		r.Active = spec.NoActive
	}
}

// serveRouter is the elector's word: on, converge now (the legs come up)
// and announce; off, take the legs down at once, then converge.
func (a *Agent) serveRouter(p *routerPart, on bool) {
	p.mu.Lock()
	p.standing = false
	if !on {
		p.announced = false
		if p.ns != "" {
			if err := dataplane.SetDown(a.cfg.Target, p.ns, p.legs...); err != nil {
				a.log.Error("router replica: taking the legs down", "err", err)
			}
		}
	}
	p.mu.Unlock()
	if on {
		go a.conntrackd(true)
	}
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// routerConverged records the router's legs from the node's state and,
// once the legs of a replica that began serving are up, announces the
// router's addresses: gratuitous ARP on each leg, so the neighbours and
// the external segment's switch move to this node now, not when their
// entries expire.
func (a *Agent) routerConverged(st *node.State, ok bool) {
	p := a.router
	if p == nil {
		return
	}
	var ns *plan.Namespace
	for i := range st.Plan.Namespaces {
		if st.Plan.Namespaces[i].Role == plan.RoleRouter {
			ns = &st.Plan.Namespaces[i]
		}
	}
	if ns == nil {
		return
	}
	var legs []string
	var arps []garp
	for _, l := range ns.Links {
		if l.Kind == plan.VXLAN { // the state-sync link stays up
			continue
		}
		legs = append(legs, l.Name)
		if !l.Down && l.MAC != "" && len(l.Addrs) > 0 {
			ip, _, _ := strings.Cut(l.Addrs[0], "/")
			arps = append(arps, garp{l.Name, l.MAC, ip})
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ns, p.legs = ns.Name, legs
	if !p.serving() {
		p.announced = false
	}
	if ok && p.el != nil && !p.el.Serving() && !p.standing {
		p.standing = true
		go a.standBy()
	}
	if !ok || p.announced || !p.serving() || len(arps) != len(legs) {
		return
	}
	p.announced = true
	where := a.cfg.Target.NS(ns.Name)
	go func() {
		// Three times, as a switch or a neighbour may miss one.
		for i, wait := range []time.Duration{0, 50 * time.Millisecond, 200 * time.Millisecond} {
			time.Sleep(wait)
			for _, g := range arps {
				if err := g.send(where); err != nil && i == 0 {
					a.log.Warn("router replica: gratuitous ARP", "leg", g.dev, "err", err)
				}
			}
		}
	}()
	a.log.Info("router replica: serving; announced", "legs", legs)
}

// standBy asks the serving replica for its connection tracking table:
// a replica that stepped down holds entries of its own that went stale
// since, which the serving replica's refresh.
func (a *Agent) standBy() { a.conntrackd(false) }

// conntrackd tells the replica's conntrackd what keepalived's
// primary-backup script of conntrack-tools does. Serving: rebuild its
// cache from the kernel table (which holds what the other replicas sent,
// written there directly, and so not in its cache) and send it all, so
// that a standby that comes back later gets every stream, not only those
// that began here. Standing by: ask the serving replica for its table.
func (a *Agent) conntrackd(serving bool) {
	if a.cfg.Conntrackd == "" {
		return
	}
	steps := [][]string{{"-n"}}
	if serving {
		steps = [][]string{{"-f"}, {"-R"}, {"-B"}}
	}
	for _, s := range steps {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		out, err := exec.CommandContext(ctx, "conntrackd", append([]string{"-C", a.cfg.Conntrackd}, s...)...).CombinedOutput()
		cancel()
		if err != nil {
			// A standby's conntrackd may not run yet (it starts after
			// the agent's first converge); it asks for the table itself
			// when it starts (StartupResync).
			level := slog.LevelWarn
			if !serving {
				level = slog.LevelDebug
			}
			a.log.Log(context.Background(), level, "router replica: conntrackd", "serving", serving, "step", s[0], "err", err, "output", strings.TrimSpace(string(out)))
			return
		}
	}
}

// garp is a gratuitous ARP for one leg's address.
type garp struct{ dev, mac, ip string }

func (g garp) send(ns string) error {
	mac, err := net.ParseMAC(g.mac)
	if err != nil {
		return err
	}
	return packetsock.Send(ns, g.dev, packetsock.ARPRequest(mac, g.ip, g.ip))
}

// healthy says whether the node's uplink and external devices are up
// with a carrier; a device the spec does not name is not checked.
func (a *Agent) healthy(ctx context.Context, devs []string) func() bool {
	// One handle for the election's life, asked every beat; opened
	// again only after a failure.
	var mu sync.Mutex
	var h *netlink.Handle
	context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if h != nil {
			h.Close()
			h = nil
		}
	})
	return func() bool {
		mu.Lock()
		defer mu.Unlock()
		if ctx.Err() != nil {
			return false
		}
		if h == nil {
			nh, nsh, err := namespace.Netlink(a.cfg.Target.HostNS)
			if err != nil {
				return false
			}
			nsh.Close()
			h = nh
		}
		for _, d := range devs {
			if d == "" {
				continue
			}
			l, err := h.LinkByName(d)
			var notFound netlink.LinkNotFoundError
			if err != nil && !errors.As(err, &notFound) {
				h.Close()
				h = nil
			}
			if err != nil || l.Attrs().Flags&net.FlagUp == 0 || l.Attrs().RawFlags&unix.IFF_LOWER_UP == 0 {
				return false
			}
		}
		return true
	}
}
