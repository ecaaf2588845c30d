package agent

// Following the store: the watch read into a batch beside the converges,
// the probe that notices a silent member, and the events applied to the
// agent's copy of the objects.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/bothnia/bothnia/store"
)

// batch gathers a watch's events until the agent takes them.
type batch struct {
	ready chan struct{} // a token when there is something to take
	last  atomic.Int64  // when the watch last answered (unix ns)
	mu    sync.Mutex
	evs   []*clientv3.Event
	rev   int64
	err   error
}

// follow reads the watch until it ends or fails.
func (b *batch) follow(w clientv3.WatchChan) {
	for {
		resp, ok := <-w
		b.last.Store(time.Now().UnixNano())
		var err error
		switch {
		case !ok:
			err = errors.New("store: watch closed")
		case resp.Err() != nil:
			err = fmt.Errorf("store: watch: %w", resp.Err())
		}
		b.mu.Lock()
		if err != nil {
			b.err = err
		} else {
			b.evs = append(b.evs, resp.Events...)
			b.rev = resp.Header.Revision
		}
		b.mu.Unlock()
		select {
		case b.ready <- struct{}{}:
		default:
		}
		if err != nil {
			return
		}
	}
}

// heard is when the watch last answered.
func (b *batch) heard() time.Time { return time.Unix(0, b.last.Load()) }

// take returns the events gathered since the last take, the revision they
// bring the store to (0: none), and the error that ended the watch.
func (b *batch) take() ([]*clientv3.Event, int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	evs, rev := b.evs, b.rev
	b.evs, b.rev = nil, 0
	return evs, rev, b.err
}

// probe asks the watch's member for a progress report twice a second
// (etcd answers on the watch itself) and reports on errc when the watch
// has heard nothing for two seconds: its member is gone, hangs, or cannot
// reach the others. A read would not do: with several members, reads go
// to any of them, while the watch stays with one.
func probe(ctx context.Context, cli *clientv3.Client, b *batch, errc chan<- error) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		_ = cli.RequestProgress(pctx) // a failure shows as silence
		cancel()
		if quiet := time.Since(b.heard()); quiet > 2*time.Second && ctx.Err() == nil {
			errc <- fmt.Errorf("the watch heard nothing from its member for %v", quiet.Round(time.Second))
			return
		}
	}
}

// applyEvents updates objs; it reports whether anything but agent status
// changed.
func applyEvents(objs store.Objects, evs []*clientv3.Event) bool {
	changed := false
	for _, ev := range evs {
		k := string(ev.Kv.Key)
		if strings.HasPrefix(k, store.Prefix+store.KindStatus+"/") {
			continue
		}
		if ev.Type == clientv3.EventTypeDelete {
			delete(objs, k)
		} else {
			objs[k] = ev.Kv.Value
		}
		changed = true
	}
	return changed
}
