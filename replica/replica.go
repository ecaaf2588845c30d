// Package replica decides, through the store, which replica of a router
// holds it: at most one at a time, and a dead holder replaced in about
// half a second, not after its lease's TTL.
//
// The holder is whoever owns the router's election key
// (store.RouterActiveKey): created only where it does not exist, under
// the creator's lease, as etcd's own concurrency.Mutex does. The holder
// beats: every Beat it writes store.RouterBeatKey in a transaction that
// succeeds only while the election key is still its own. Two rules keep
// two holders from ever serving at once:
//
//   - A holder serves only while its last acknowledged beat was sent less
//     than Fence ago. Cut off from the store (its etcd member gone, its
//     link cut), it stops serving by itself, Fence after its last
//     acknowledged beat at the latest.
//   - A standby takes a holder's key away only when the holder's beat key
//     has not changed for Dead (> Fence) since the standby saw it last,
//     in a transaction that compares the beat key's revision with the one
//     it saw: a beat that landed in the meantime makes it fail. So when
//     the key goes, the holder's last acknowledged beat was sent at least
//     Dead ago, and the holder stopped serving Dead-Fence before.
//
// A dead node's lease would take its TTL plus etcd's expiry sweep (up to
// 500 ms) to end; the beats replace that with Dead. A restarted agent
// whose node still holds the key takes it over under its new lease
// without a failover.
package replica

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/bothnia/bothnia/store"
)

// Config configures one replica's part in an election.
type Config struct {
	Client *clientv3.Client
	Router string // the router's name
	Node   string // this replica's node
	// Beat, Fence and Dead: see the package comment. Zero values are
	// 100 ms, 250 ms and 400 ms.
	Beat, Fence, Dead time.Duration
	// TTL is the lease's, in seconds (default 3): how long a holder that
	// vanished without beating keeps its key if no standby is there.
	TTL int
	// Healthy says whether this node can serve (its uplink and external
	// devices up). A replica that is not healthy gives up the key and
	// does not run for it.
	Healthy func() bool
	// Serve is called with true when this replica starts serving and
	// with false when it stops; calls come one at a time, in order.
	Serve func(bool)
	Log   *slog.Logger
}

// Elector is one replica's part in an election.
type Elector struct {
	cfg     Config
	serving atomic.Bool
	lastAck atomic.Int64 // send time of the last acknowledged beat (unix ns)
	mu      sync.Mutex   // orders Serve calls
	hmu     sync.Mutex   // guards holding; taken before mu, never after
	holding bool         // hold runs: an acknowledged beat may serve
}

// New returns an elector; Run takes part in the election.
func New(cfg Config) *Elector {
	if cfg.Beat == 0 {
		cfg.Beat = 100 * time.Millisecond
	}
	if cfg.Fence == 0 {
		cfg.Fence = 250 * time.Millisecond
	}
	if cfg.Dead == 0 {
		cfg.Dead = 400 * time.Millisecond
	}
	if cfg.TTL == 0 {
		cfg.TTL = 3
	}
	if cfg.Healthy == nil {
		cfg.Healthy = func() bool { return true }
	}
	if cfg.Serve == nil {
		cfg.Serve = func(bool) {}
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	cfg.Log = cfg.Log.With("router", cfg.Router, "node", cfg.Node)
	return &Elector{cfg: cfg}
}

// Serving reports whether this replica serves now.
func (e *Elector) Serving() bool { return e.serving.Load() }

func (e *Elector) setServing(on bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.serving.Load() == on {
		return
	}
	e.serving.Store(on)
	e.cfg.Log.Info("router replica", "serving", on)
	e.cfg.Serve(on)
}

// Run takes part in the election until ctx ends, then gives the key up
// if it holds it.
func (e *Elector) Run(ctx context.Context) {
	go e.fence(ctx)
	backoff := e.cfg.Beat
	for ctx.Err() == nil {
		err := e.session(ctx)
		if ctx.Err() != nil {
			break
		}
		e.cfg.Log.Warn("router election: session ended", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
	e.setServing(false)
}

// fence stops serving when the last acknowledged beat is older than
// Fence, whatever the beating goroutine is stuck on.
func (e *Elector) fence(ctx context.Context) {
	t := time.NewTicker(e.cfg.Beat / 5)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if e.serving.Load() && time.Since(time.Unix(0, e.lastAck.Load())) > e.cfg.Fence {
			e.cfg.Log.Warn("router replica: no beat acknowledged within the fence; stepping down", "fence", e.cfg.Fence)
			e.setServing(false)
		}
	}
}

// session is one lease's life: run for the key, hold it or watch its
// holder, until the lease is lost.
func (e *Elector) session(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	l, err := e.cfg.Client.Grant(rctx, int64(e.cfg.TTL))
	cancel()
	if err != nil {
		return fmt.Errorf("grant a lease: %w", err)
	}
	lease := l.ID
	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	ka, err := e.cfg.Client.KeepAlive(sctx, lease)
	if err != nil {
		return fmt.Errorf("keep the lease alive: %w", err)
	}
	lost := make(chan struct{})
	go func() {
		for range ka {
		}
		close(lost)
	}()
	defer func() {
		e.setServing(false)
		if ctx.Err() == nil {
			return // a lost lease: the key went, or goes, with it
		}
		// A clean stop gives the key up: a standby need not wait for Dead.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		_, _ = e.cfg.Client.Txn(dctx).If(e.ours(lease)...).Then(clientv3.OpDelete(e.key())).Commit()
		_, _ = e.cfg.Client.Revoke(dctx, lease)
		cancel()
	}()
	for {
		select {
		case <-lost:
			return errors.New("the lease's keepalives ended")
		default:
		}
		if sctx.Err() != nil {
			return sctx.Err()
		}
		if !e.cfg.Healthy() {
			e.setServing(false)
			e.resign(sctx, lease)
			if err := sleep(sctx, e.cfg.Beat); err != nil {
				return err
			}
			continue
		}
		held, holder, err := e.acquire(sctx, lease)
		if err != nil {
			if err := sleep(sctx, e.cfg.Beat); err != nil {
				return err
			}
			continue
		}
		if held {
			err = e.hold(sctx, lease, lost)
		} else {
			err = e.stand(sctx, holder, lost)
		}
		if err != nil {
			return err
		}
	}
}

func (e *Elector) key() string  { return store.RouterActiveKey(e.cfg.Router) }
func (e *Elector) beat() string { return store.RouterBeatKey(e.cfg.Router) }

// ours compares the key with this replica's: its node, its lease.
func (e *Elector) ours(lease clientv3.LeaseID) []clientv3.Cmp {
	return []clientv3.Cmp{
		clientv3.Compare(clientv3.Value(e.key()), "=", e.cfg.Node),
		clientv3.Compare(clientv3.LeaseValue(e.key()), "=", lease),
	}
}

// acquire takes the key where nobody holds it, or where this node holds
// it under another lease (the agent restarted). It returns whether it
// holds the key now, and otherwise who does.
func (e *Elector) acquire(ctx context.Context, lease clientv3.LeaseID) (bool, string, error) {
	sent := time.Now()
	rctx, cancel := context.WithTimeout(ctx, e.cfg.Fence)
	defer cancel()
	put := clientv3.OpPut(e.key(), e.cfg.Node, clientv3.WithLease(lease))
	resp, err := e.cfg.Client.Txn(rctx).
		If(clientv3.Compare(clientv3.CreateRevision(e.key()), "=", 0)).
		Then(put).
		Else(clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.Value(e.key()), "=", e.cfg.Node)},
			[]clientv3.Op{put},
			[]clientv3.Op{clientv3.OpGet(e.key())})).
		Commit()
	if err != nil {
		return false, "", err
	}
	if resp.Succeeded {
		e.lastAck.Store(sent.UnixNano())
		return true, e.cfg.Node, nil
	}
	inner := resp.Responses[0].GetResponseTxn()
	if inner.Succeeded {
		e.lastAck.Store(sent.UnixNano())
		return true, e.cfg.Node, nil
	}
	kvs := inner.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return false, "", errors.New("the key went between compare and read")
	}
	return false, string(kvs[0].Value), nil
}

// hold beats while the key is this replica's and it stays healthy. A beat
// goes out every Beat whether the last one was answered or not: a request
// stuck on a hung etcd member must not hold back the next, which the
// client sends to another.
func (e *Elector) hold(ctx context.Context, lease clientv3.LeaseID, lost <-chan struct{}) error {
	t := time.NewTicker(e.cfg.Beat)
	defer t.Stop()
	hctx, cancel := context.WithCancel(ctx)
	taken := make(chan struct{}, 1) // a beat found the key someone else's
	var wg sync.WaitGroup
	e.hmu.Lock()
	e.holding = true
	e.hmu.Unlock()
	defer func() {
		// A beat still in flight must not make this replica serve once
		// it has stopped holding.
		e.hmu.Lock()
		e.holding = false
		e.hmu.Unlock()
		cancel()
		wg.Wait()
	}()
	for seq := 1; ; seq++ {
		wg.Add(1)
		go func(seq int) {
			defer wg.Done()
			sent := time.Now()
			rctx, cancel := context.WithTimeout(hctx, e.cfg.Fence)
			defer cancel()
			resp, err := e.cfg.Client.Txn(rctx).If(e.ours(lease)...).
				Then(clientv3.OpPut(e.beat(), fmt.Sprintf("%s %d", e.cfg.Node, seq), clientv3.WithLease(lease))).Commit()
			switch {
			case err != nil:
			case !resp.Succeeded:
				select {
				case taken <- struct{}{}:
				default:
				}
			default:
				e.acked(sent)
			}
		}(seq)
		if !e.cfg.Healthy() {
			e.setServing(false)
			e.resign(ctx, lease)
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-lost:
			return errors.New("the lease's keepalives ended")
		case <-taken:
			e.setServing(false)
			return nil // the key is someone else's now
		case <-t.C:
		}
	}
}

// acked records an acknowledged beat sent at sent, and serves if it is
// the freshest and within the fence.
func (e *Elector) acked(sent time.Time) {
	for {
		last := e.lastAck.Load()
		if sent.UnixNano() <= last {
			return
		}
		if e.lastAck.CompareAndSwap(last, sent.UnixNano()) {
			break
		}
	}
	e.hmu.Lock()
	defer e.hmu.Unlock()
	if e.holding && time.Since(sent) < e.cfg.Fence {
		e.setServing(true)
	}
}

// stand watches the holder's beats and takes its key away when they
// stop for Dead, or runs again when the key goes.
func (e *Elector) stand(ctx context.Context, holder string, lost <-chan struct{}) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	rctx, rcancel := context.WithTimeout(ctx, e.cfg.Fence)
	resp, err := e.cfg.Client.Get(rctx, e.beat())
	rcancel()
	if err != nil {
		return nil
	}
	var beatRev int64
	if len(resp.Kvs) > 0 {
		beatRev = resp.Kvs[0].ModRevision
	}
	seen := time.Now()
	keyW := e.cfg.Client.Watch(wctx, e.key(), clientv3.WithRev(resp.Header.Revision+1))
	beatW := e.cfg.Client.Watch(wctx, e.beat(), clientv3.WithRev(resp.Header.Revision+1))
	t := time.NewTicker(e.cfg.Beat / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-lost:
			return errors.New("the lease's keepalives ended")
		case wr, ok := <-keyW:
			if !ok || wr.Err() != nil {
				return nil
			}
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete || string(ev.Kv.Value) != holder {
					return nil // run again
				}
			}
		case wr, ok := <-beatW:
			if !ok || wr.Err() != nil {
				return nil
			}
			for _, ev := range wr.Events {
				beatRev, seen = ev.Kv.ModRevision, time.Now()
			}
		case <-t.C:
			if time.Since(seen) < e.cfg.Dead || !e.cfg.Healthy() {
				continue
			}
			dctx, dcancel := context.WithTimeout(ctx, e.cfg.Fence)
			r, err := e.cfg.Client.Txn(dctx).If(
				clientv3.Compare(clientv3.ModRevision(e.beat()), "=", beatRev),
				clientv3.Compare(clientv3.Value(e.key()), "=", holder),
			).Then(clientv3.OpDelete(e.key())).Commit()
			dcancel()
			if err == nil && r.Succeeded {
				e.cfg.Log.Warn("router replica: the holder stopped beating; taking its key", "holder", holder, "silent", time.Since(seen).Round(time.Millisecond))
				return nil
			}
			if err == nil {
				return nil // a beat or a new holder came: look again
			}
		}
	}
}

// resign deletes the key if it is this replica's.
func (e *Elector) resign(ctx context.Context, lease clientv3.LeaseID) {
	rctx, cancel := context.WithTimeout(ctx, e.cfg.Fence)
	defer cancel()
	_, _ = e.cfg.Client.Txn(rctx).If(e.ours(lease)...).Then(clientv3.OpDelete(e.key())).Commit()
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
