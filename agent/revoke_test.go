package agent

import (
	"context"
	"testing"
	"time"
)

// A revocation queued while another waits replaces it: only the latest
// fabric judges connections, and a burst of changes costs one dump.
func TestRevokerRunsTheLatestOnly(t *testing.T) {
	r := newRevoker()
	ran := make(chan int, 4)
	job := func(id int) func() (int, error) {
		return func() (int, error) { ran <- id; return id, nil }
	}
	r.queue(job(1))
	r.queue(job(2)) // replaces 1, which has not started
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reported := make(chan int, 4)
	go r.run(ctx, func(n int, err error) { reported <- n })
	select {
	case id := <-ran:
		if id != 2 {
			t.Fatalf("ran revocation %d, want the latest (2)", id)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the queued revocation never ran")
	}
	if n := <-reported; n != 2 {
		t.Fatalf("reported %d, want the job's count 2", n)
	}
	r.queue(job(3))
	if id := <-ran; id != 3 {
		t.Fatalf("ran %d, want 3", id)
	}
	select {
	case id := <-ran:
		t.Fatalf("revocation %d ran although it was replaced", id)
	case <-time.After(100 * time.Millisecond):
	}
}
