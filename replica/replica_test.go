package replica

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/bothnia/bothnia/store"
)

// timeline records when each replica served, to show that no two did at
// once.
type timeline struct {
	mu    sync.Mutex
	on    map[string]time.Time
	spans map[string][][2]time.Time
}

func newTimeline() *timeline {
	return &timeline{on: map[string]time.Time{}, spans: map[string][][2]time.Time{}}
}

func (tl *timeline) serve(node string) func(bool) {
	return func(on bool) {
		tl.mu.Lock()
		defer tl.mu.Unlock()
		if on {
			tl.on[node] = time.Now()
			return
		}
		tl.spans[node] = append(tl.spans[node], [2]time.Time{tl.on[node], time.Now()})
		delete(tl.on, node)
	}
}

// serving is who serves now.
func (tl *timeline) serving() []string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	var out []string
	for n := range tl.on {
		out = append(out, n)
	}
	return out
}

// overlaps fails the test if two replicas' spans (open ones up to now)
// overlap.
func (tl *timeline) overlaps(t *testing.T) {
	t.Helper()
	tl.mu.Lock()
	defer tl.mu.Unlock()
	type span struct {
		node     string
		from, to time.Time
	}
	var all []span
	for n, ss := range tl.spans {
		for _, s := range ss {
			all = append(all, span{n, s[0], s[1]})
		}
	}
	for n, from := range tl.on {
		all = append(all, span{n, from, time.Now()})
	}
	for i := range all {
		for j := range all {
			a, b := all[i], all[j]
			if a.node != b.node && a.from.Before(b.to) && b.from.Before(a.to) {
				t.Errorf("%s served %v-%v while %s served %v-%v", a.node, a.from.Format("15:04:05.000"), a.to.Format("15:04:05.000"),
					b.node, b.from.Format("15:04:05.000"), b.to.Format("15:04:05.000"))
			}
		}
	}
}

func startStore(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	url := "unix://" + filepath.Join(dir, "etcd.sock")
	srv, err := store.StartServer(dir, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return url
}

func client(t *testing.T, url string) *clientv3.Client {
	t.Helper()
	cli, err := store.Connect(store.ClientConfig{Endpoints: []string{url}})
	if err != nil {
		t.Fatal(err)
	}
	return cli
}

func waitFor(t *testing.T, what string, d time.Duration, f func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < d {
		if f() {
			return time.Since(start)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v", what, d)
	return 0
}

func TestOneHolderAndAFastTakeover(t *testing.T) {
	url := startStore(t)
	tl := newTimeline()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	cliA := client(t, url)
	a := New(Config{Client: cliA, Router: "r", Node: "a", Serve: tl.serve("a")})
	go a.Run(ctx)
	waitFor(t, "a serves", 5*time.Second, a.Serving)
	cliB := client(t, url)
	defer cliB.Close()
	b := New(Config{Client: cliB, Router: "r", Node: "b", Serve: tl.serve("b")})
	go b.Run(ctx)
	time.Sleep(time.Second)
	if b.Serving() || !a.Serving() {
		t.Fatalf("after a second: a serving %v, b serving %v; want a only", a.Serving(), b.Serving())
	}

	// a's node dies: its client is gone, nothing is given up cleanly.
	cliA.Close()
	took := waitFor(t, "b takes over", 3*time.Second, b.Serving)
	t.Logf("b served %v after a's store connection died (a's lease TTL is %d s)", took.Round(time.Millisecond), a.cfg.TTL)
	if took > time.Second {
		t.Errorf("takeover took %v; want under 1 s", took)
	}
	if a.Serving() {
		t.Errorf("a still serves without the store")
	}
	tl.overlaps(t)
	resp, err := cliB.Get(ctx, store.RouterActiveKey("r"))
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "b" {
		t.Fatalf("election key: %v %v; want b", resp, err)
	}
}

func TestARestartedAgentKeepsItsHolding(t *testing.T) {
	url := startStore(t)
	tl := newTimeline()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cliA := client(t, url)
	a := New(Config{Client: cliA, Router: "r", Node: "a", Serve: tl.serve("a")})
	go a.Run(ctx)
	waitFor(t, "a serves", 5*time.Second, a.Serving)
	cliB := client(t, url)
	defer cliB.Close()
	b := New(Config{Client: cliB, Router: "r", Node: "b", Serve: tl.serve("b")})
	go b.Run(ctx)
	time.Sleep(300 * time.Millisecond)

	// a's agent is killed and started again at once: the new process
	// finds its node's key under the old lease and takes it over.
	cliA.Close()
	cliA2 := client(t, url)
	defer cliA2.Close()
	a2 := New(Config{Client: cliA2, Router: "r", Node: "a", Serve: tl.serve("a2")})
	go a2.Run(ctx)
	waitFor(t, "the restarted a serves", 2*time.Second, a2.Serving)
	time.Sleep(time.Second)
	if b.Serving() {
		t.Errorf("b took over although a's restarted agent held the key")
	}
	tl.overlaps(t)
}

func TestAnUnhealthyHolderGivesUp(t *testing.T) {
	url := startStore(t)
	tl := newTimeline()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	healthy := true
	cliA, cliB := client(t, url), client(t, url)
	defer cliA.Close()
	defer cliB.Close()
	a := New(Config{Client: cliA, Router: "r", Node: "a", Serve: tl.serve("a"),
		Healthy: func() bool { mu.Lock(); defer mu.Unlock(); return healthy }})
	go a.Run(ctx)
	waitFor(t, "a serves", 5*time.Second, a.Serving)
	b := New(Config{Client: cliB, Router: "r", Node: "b", Serve: tl.serve("b")})
	go b.Run(ctx)
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	healthy = false
	mu.Unlock()
	took := waitFor(t, "b takes over from an unhealthy a", 2*time.Second, b.Serving)
	t.Logf("b served %v after a lost its uplink", took.Round(time.Millisecond))
	mu.Lock()
	healthy = true
	mu.Unlock()
	time.Sleep(time.Second)
	if a.Serving() || !b.Serving() {
		t.Errorf("a healthy again: a serving %v, b %v; want b to keep it (no second takeover)", a.Serving(), b.Serving())
	}
	tl.overlaps(t)
}

func TestAStoppedReplicaGivesTheKeyUp(t *testing.T) {
	url := startStore(t)
	tl := newTimeline()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cliA, cliB := client(t, url), client(t, url)
	defer cliA.Close()
	defer cliB.Close()
	actx, acancel := context.WithCancel(ctx)
	a := New(Config{Client: cliA, Router: "r", Node: "a", Serve: tl.serve("a")})
	done := make(chan struct{})
	go func() { a.Run(actx); close(done) }()
	waitFor(t, "a serves", 5*time.Second, a.Serving)
	b := New(Config{Client: cliB, Router: "r", Node: "b", Serve: tl.serve("b"), Dead: 10 * time.Second})
	go b.Run(ctx)
	time.Sleep(200 * time.Millisecond)
	acancel()
	<-done
	// Dead is 10 s: only a's giving the key up lets b in this soon.
	took := waitFor(t, "b serves after a stopped", 2*time.Second, b.Serving)
	t.Logf("b served %v after a stopped", took.Round(time.Millisecond))
	if got := tl.serving(); len(got) != 1 || got[0] != "b" {
		t.Errorf("serving %v; want [b]", got)
	}
	tl.overlaps(t)
}

// The holder's etcd member is lost (its host's member, the one its agent
// talks to): the holder, alive but cut off, steps down by itself before
// the standby, served by the other members, takes over.
func TestTheHoldersMemberIsLost(t *testing.T) {
	members, err := store.StartCluster(t.TempDir(), []string{"knox-1", "knox-2", "epouta-1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, m := range members[1:] {
			m.Close()
		}
	})
	tl := newTimeline()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cliA := client(t, members[0].ClientURL)
	defer cliA.Close()
	cliB := client(t, members[1].ClientURL)
	defer cliB.Close()
	a := New(Config{Client: cliA, Router: "r", Node: "a", Serve: tl.serve("a")})
	go a.Run(ctx)
	waitFor(t, "a serves", 10*time.Second, a.Serving)
	b := New(Config{Client: cliB, Router: "r", Node: "b", Serve: tl.serve("b")})
	go b.Run(ctx)
	time.Sleep(500 * time.Millisecond)
	lost := time.Now()
	go members[0].Close() // slow to return: it waits for its peers
	waitFor(t, "b takes over", 5*time.Second, b.Serving)
	t.Logf("b served %v after a's member was lost", time.Since(lost).Round(time.Millisecond))
	if a.Serving() {
		t.Errorf("a serves without its member")
	}
	time.Sleep(500 * time.Millisecond)
	tl.overlaps(t)
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if len(tl.spans["a"]) != 1 {
		t.Errorf("a's serving spans: %v; want one, ended by its fence", tl.spans["a"])
	}
}
