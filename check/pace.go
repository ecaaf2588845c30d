package check

import (
	"context"
	"sync"
	"time"
)

// A Pacer bounds how many new pairs of hosts the probes introduce per
// window. Each new pair makes the kernel learn two neighbour entries (the
// sender resolves the target, the target learns the sender from the
// request), and the kernel's IPv4 neighbour table is one for all network
// namespaces: past gc_thresh3 entries (1024 by default) it refuses new ones
// while the old are younger than five seconds, and the probe's packet is
// dropped. A full matrix of 96 lab VMs is 9,000 such entries; probed at
// once, a thousand allowed probes went unanswered. Pairs already seen cost
// nothing. A nil Pacer never waits.
type Pacer struct {
	pairs  int
	window time.Duration

	mu     sync.Mutex
	seen   map[[2]string]bool
	recent []time.Time // when the pairs of the current window were let in
}

// NewPacer lets pairs new pairs in per window.
func NewPacer(pairs int, window time.Duration) *Pacer {
	return &Pacer{pairs: max(pairs, 1), window: window, seen: map[[2]string]bool{}}
}

// Wait returns when a probe between a and b may go.
func (p *Pacer) Wait(ctx context.Context, a, b string) {
	if p == nil {
		return
	}
	if b < a {
		a, b = b, a
	}
	key := [2]string{a, b}
	for {
		p.mu.Lock()
		if p.seen[key] {
			p.mu.Unlock()
			return
		}
		now := time.Now()
		for len(p.recent) > 0 && now.Sub(p.recent[0]) >= p.window {
			p.recent = p.recent[1:]
		}
		if len(p.recent) < p.pairs {
			p.seen[key] = true
			p.recent = append(p.recent, now)
			p.mu.Unlock()
			return
		}
		wait := p.window - now.Sub(p.recent[0])
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}
