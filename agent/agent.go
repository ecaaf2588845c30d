// Package agent keeps one node converged with the store by itself: it
// lists the fabric, converges the node, then watches the store from the
// revision it read and converges again on every change; a timer re-reads
// the kernel and repairs drift. Level-triggered, like client-go's
// controllers: an event only says "look again", so a missed or coalesced
// event costs nothing, and the state converged to is always the whole
// current fabric, never a replay of events.
//
// When the store is unreachable the node keeps what it has (nothing is
// flushed), the agent retries with backoff and reports not ready.
package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/bothnia/bothnia/dataplane"
	"github.com/bothnia/bothnia/node"
	"github.com/bothnia/bothnia/store"
)

// Config configures an agent.
type Config struct {
	Node   string
	Store  store.ClientConfig
	Target dataplane.Target // the node's namespaces ("" HostNS: this process's)
	// Resync is how often the kernel is read back and drift repaired.
	Resync time.Duration
	// Listen serves /healthz, /readyz and /metrics ("" serves nothing).
	Listen string
	Log    *slog.Logger
	// Registry takes the metrics (nil: a registry of the agent's own).
	Registry *prometheus.Registry
	// ExternalElection leaves the choice of the serving router replica
	// to another system, which writes the store's election key (bothnia
	// router claim): the failover benchmark's keepalived peer. The agent
	// only follows the key.
	ExternalElection bool
	// Conntrackd is the configuration of this node's router replica's
	// conntrackd (bothnia router conntrackd), through which the agent
	// tells it to send its whole table when the replica starts serving.
	Conntrackd string
	// StandIn converges a foreign site's node as that site's own cloud
	// would (plain bridges, Neutron's iptables layout): the lab's stand-in
	// for a cloud bothnia does not run. Without it a foreign node is refused.
	StandIn bool
}

// Agent is one node's agent.
type Agent struct {
	cfg  Config
	conv *node.Converger
	asm  store.Assembler // decodes only the objects that changed
	m    *metrics
	log  *slog.Logger
	rev  *revoker

	mu      sync.Mutex
	status  Status
	changed chan struct{} // a token when the status changed
	// up are the node's ports that are up (see ports.go), nil before the
	// first converge; upChanged a token when they changed.
	up        map[string]string
	upChanged chan struct{}

	pmu     sync.Mutex
	pending map[string]bool // taps the last converge could not plug yet
	taps    chan struct{}   // a token when one of them appeared

	// Set by Run, for the router's election (router.go).
	ctx    context.Context
	cli    *clientv3.Client
	router *routerPart
	kick   chan struct{} // a token: converge now (the election changed)
}

// Status is what the agent reports, in the store and on /readyz.
type Status struct {
	Node     string    `json:"node"`
	Ready    bool      `json:"ready"`
	Revision int64     `json:"revision"` // the store revision the node converged to
	Ports    int       `json:"ports"`
	Error    string    `json:"error,omitempty"`
	Problems []string  `json:"problems,omitempty"` // objects of the store left out
	Time     time.Time `json:"time"`
}

// New returns an agent; Run starts it.
func New(cfg Config) *Agent {
	if cfg.Resync == 0 {
		cfg.Resync = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	a := &Agent{cfg: cfg, conv: &node.Converger{Target: cfg.Target, StandIn: cfg.StandIn}, log: cfg.Log.With("node", cfg.Node)}
	a.changed = make(chan struct{}, 1)
	a.upChanged = make(chan struct{}, 1)
	a.taps = make(chan struct{}, 1)
	a.kick = make(chan struct{}, 1)
	a.rev = newRevoker()
	a.m = newMetrics(cfg.Registry)
	cfg.Registry.MustRegister(newDrops(cfg.Target.HostNS))
	a.status.Node = cfg.Node
	return a
}

// Status returns the agent's last status.
func (a *Agent) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.status
}

func (a *Agent) setStatus(f func(*Status)) {
	a.mu.Lock()
	f(&a.status)
	a.status.Time = time.Now()
	a.mu.Unlock()
	select {
	case a.changed <- struct{}{}:
	default:
	}
}

// Run converges the node until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	defer a.conv.Close()
	if a.cfg.Listen != "" {
		srv, err := a.serve()
		if err != nil {
			return err
		}
		defer srv.Close()
	}
	cli, err := store.Connect(a.cfg.Store)
	if err != nil {
		return err
	}
	defer cli.Close()
	a.ctx, a.cli = ctx, cli
	defer func() {
		if a.router != nil {
			a.router.cancel()
			<-a.router.done
		}
	}()
	go a.report(ctx, cli)
	go a.reportPorts(ctx, cli)
	go a.rev.run(ctx, a.revoked)
	go a.watchTaps(ctx)
	resync := time.NewTicker(a.cfg.Resync)
	defer resync.Stop()
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := a.session(ctx, cli, resync.C)
		if ctx.Err() != nil {
			break
		}
		a.setStatus(func(s *Status) { s.Ready, s.Error = false, err.Error() })
		a.log.Warn("store session ended; keeping the node as it is", "err", err, "retry", backoff)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		// At most 2 s between tries: a store back after an outage is
		// found soon, and a try is one connection attempt.
		backoff = min(backoff*2, 2*time.Second)
	}
	return nil
}

// session lists the fabric, converges, and follows the watch until it
// fails. Every event re-reads nothing: the watch carries the objects, the
// agent keeps them, and the next converge takes the whole current set.
func (a *Agent) session(ctx context.Context, cli *clientv3.Client, resync <-chan time.Time) error {
	lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	objs, rev, err := store.Load(lctx, cli)
	cancel()
	if err != nil {
		return err
	}
	a.converge(objs, rev)
	converged := rev // the revision objs are at
	wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer wcancel()
	w := cli.Watch(wctx, store.Prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	// A watch whose member went away just waits for it to come back,
	// silently; a probe tells the agent (and /readyz) it is cut off. It
	// runs beside the loop: a slow answer must not hold back a change
	// the watch has already delivered.
	// The watch is read all the time, beside the converges, into a
	// batch: a watcher that stops reading while its node converges is
	// one etcd treats as slow and feeds from its backlog a few revisions
	// at a time, so a burst of writes became dozens of converges. Now
	// the next converge takes everything that came during the last.
	b := &batch{ready: make(chan struct{}, 1)}
	b.last.Store(time.Now().UnixNano())
	go b.follow(w)
	probeErr := make(chan error, 1)
	go probe(wctx, cli, b, probeErr)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-probeErr:
			return fmt.Errorf("store unreachable: %w", err)
		case <-resync:
			a.resync()
			if a.pendingAppeared() {
				// A tap the link feed missed (it was down, or the tap
				// came while the feed restarted).
				a.converge(objs, converged)
			}
		case <-a.taps:
			a.converge(objs, converged)
		case <-a.kick:
			a.converge(objs, converged)
		case <-b.ready:
			evs, rev, err := b.take()
			changed := applyEvents(objs, evs)
			if rev > 0 {
				a.m.revision.Set(float64(rev))
				converged = rev
			}
			if changed {
				a.converge(objs, rev)
			}
			if err != nil {
				return err // compacted, no leader or closed: list again
			}
		}
	}
}

// converge brings the node to the fabric the objects describe. A fabric
// that cannot be built leaves the node as it is.
func (a *Agent) converge(objs store.Objects, rev int64) {
	start := time.Now()
	s, problems, err := a.asm.Assemble(objs)
	var probs []string
	for _, p := range problems {
		probs = append(probs, p.String())
		a.log.Warn("store object refused", "key", p.Key, "err", p.Err)
	}
	a.m.refused.Set(float64(len(problems)))
	if err != nil {
		a.fail(rev, probs, fmt.Errorf("fabric at revision %d: %w", rev, err))
		return
	}
	ports := 0
	assembled := time.Now()
	a.routerElection(s)
	a.routerView(s)
	fab, err := node.Desired(s)
	if err == nil {
		var st *node.State
		if st, err = fab.Node(a.cfg.Node); err == nil {
			var res *node.Result
			desired := time.Now()
			res, err = a.conv.Converge(st)
			a.routerConverged(st, err == nil)
			if res != nil && len(res.Changes) > 0 {
				a.m.changes.Add(float64(len(res.Changes)))
				a.log.Info("converged", "revision", rev, "changes", len(res.Changes), "pending", len(res.Pending),
					"assemble", assembled.Sub(start).Round(time.Millisecond), "compile", desired.Sub(assembled).Round(time.Millisecond),
					"converge", time.Since(desired).Round(time.Millisecond))
				for _, ch := range res.Changes {
					a.log.Debug("change", "what", ch)
				}
				if err == nil {
					// Anything changed may have narrowed what is allowed.
					a.rev.queue(a.conv.Revocation())
				}
			}
			ports = len(st.Plan.Ports)
			a.m.ports.Set(float64(ports))
			pending := pendingTaps(res)
			if res != nil {
				a.setPending(pending)
			}
			if err == nil {
				a.setUp(upPorts(s, st, pending))
			}
		}
	}
	a.m.converge.Observe(time.Since(start).Seconds())
	if err != nil {
		a.fail(rev, probs, err)
		return
	}
	a.setStatus(func(s *Status) {
		s.Ready, s.Revision, s.Error, s.Problems, s.Ports = true, rev, "", probs, ports
	})
	a.m.ready.Set(1)
}

// revoked reports a revocation. One that failed leaves the agent not
// ready until the next converge, as a failed converge does: connections
// the fabric no longer allows may still be open.
func (a *Agent) revoked(n int, err error) {
	a.m.revoked.Add(float64(n))
	if n > 0 {
		a.log.Info("revoked connections no longer allowed", "count", n)
	}
	if err != nil {
		a.m.failures.Inc()
		a.m.ready.Set(0)
		a.log.Error("revoking connections failed", "err", err)
		a.setStatus(func(s *Status) { s.Ready, s.Error = false, err.Error() })
	}
}

func (a *Agent) fail(rev int64, probs []string, err error) {
	a.m.failures.Inc()
	a.m.ready.Set(0)
	a.log.Error("converge failed; keeping the node as it is", "revision", rev, "err", err)
	a.setStatus(func(s *Status) { s.Ready, s.Error, s.Problems = false, err.Error(), probs })
}

func (a *Agent) resync() {
	drift, err := a.conv.Resync()
	if len(drift) > 0 {
		a.m.repairs.Add(float64(len(drift)))
		a.log.Warn("repaired drift", "count", len(drift), "first", drift[0])
	}
	if err != nil {
		a.m.ready.Set(0)
		a.log.Error("resync failed", "err", err)
		a.setStatus(func(s *Status) { s.Ready, s.Error = false, err.Error() })
	}
}

// report writes the agent's status into the store under a lease, so the
// status of a dead agent disappears with it.
func (a *Agent) report(ctx context.Context, cli *clientv3.Client) {
	var lease clientv3.LeaseID
	var last Status
	lost := make(chan clientv3.LeaseID, 1) // a lease whose keepalives ended
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-a.changed:
		case id := <-lost:
			// Expired, or its keepalives could not reach the store: the
			// status key went (or goes) with it, so write it again.
			if id == lease {
				lease = 0
			}
		}
		st := a.Status()
		if lease != 0 && st.Ready == last.Ready && st.Revision == last.Revision && st.Error == last.Error {
			continue
		}
		// Short tries: one that meets a hung member fails fast, and the
		// next, 200 ms on, goes to another.
		rctx, cancel := context.WithTimeout(ctx, 700*time.Millisecond)
		if lease == 0 {
			l, err := cli.Grant(rctx, 10)
			if err != nil {
				cancel()
				continue
			}
			lease = l.ID
			if ch, err := cli.KeepAlive(ctx, lease); err == nil {
				go func(id clientv3.LeaseID) {
					for range ch {
					}
					select {
					case lost <- id:
					default:
					}
				}(lease)
			}
		}
		b, _ := json.Marshal(st)
		if _, err := cli.Put(rctx, store.StatusKey(a.cfg.Node), string(b), clientv3.WithLease(lease)); err != nil {
			lease = 0 // the lease may have expired while the store was away
		} else {
			last = st
		}
		cancel()
	}
}

func (a *Agent) serve() (*http.Server, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		st := a.Status()
		if !st.Ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(st)
	})
	mux.Handle("/metrics", promhttp.HandlerFor(a.cfg.Registry, promhttp.HandlerOpts{}))
	srv := &http.Server{Addr: a.cfg.Listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ln, err := listen(a.cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("agent: listen %s: %w", a.cfg.Listen, err)
	}
	go func() { _ = srv.Serve(ln) }()
	return srv, nil
}
