package agent

import (
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/bothnia/bothnia/store"
)

func put(k, v string) *clientv3.Event {
	return &clientv3.Event{Type: clientv3.EventTypePut, Kv: &mvccpb.KeyValue{Key: []byte(k), Value: []byte(v)}}
}

func resp(rev int64, evs ...*clientv3.Event) clientv3.WatchResponse {
	return clientv3.WatchResponse{Header: &etcdserverpb.ResponseHeader{Revision: rev}, Events: evs}
}

// The batch gathers every response that came while the agent was busy,
// hands them over in order with the newest revision, and starts afresh.
func TestBatchGathersWhatCameMeanwhile(t *testing.T) {
	w := make(chan clientv3.WatchResponse, 3)
	b := &batch{ready: make(chan struct{}, 1)}
	before := time.Now()
	w <- resp(5, put(store.PortKey("mgmt", "a"), "1"))
	w <- resp(6) // a progress report: no events
	w <- resp(7, put(store.PortKey("mgmt", "b"), "2"), put(store.PortKey("mgmt", "a"), "3"))
	go b.follow(w)
	deadline := time.After(2 * time.Second)
	for {
		<-b.ready
		b.mu.Lock()
		n := len(b.evs)
		b.mu.Unlock()
		if n == 3 {
			break
		}
		select {
		case <-deadline:
			t.Fatalf("the batch holds %d events, want 3", n)
		default:
		}
	}
	evs, rev, err := b.take()
	if err != nil || rev != 7 || len(evs) != 3 || string(evs[2].Kv.Value) != "3" {
		t.Fatalf("take: %d events, revision %d, %v", len(evs), rev, err)
	}
	if !b.heard().After(before) {
		t.Error("the batch did not note when the watch answered")
	}
	if evs, rev, _ := b.take(); len(evs) != 0 || rev != 0 {
		t.Fatalf("a second take: %d events, revision %d", len(evs), rev)
	}
	close(w)
	for {
		select {
		case <-b.ready:
		case <-time.After(2 * time.Second):
			t.Fatal("a closed watch must end the session")
		}
		if _, _, err := b.take(); err != nil {
			break
		}
	}
}

// Agent status keys change all the time and are no reason to converge.
func TestApplyEventsIgnoresStatus(t *testing.T) {
	objs := store.Objects{}
	if applyEvents(objs, []*clientv3.Event{put(store.StatusKey("knox-c1"), "{}")}) {
		t.Fatal("a status write counted as a change")
	}
	if !applyEvents(objs, []*clientv3.Event{put(store.PortKey("mgmt", "a"), "x")}) || string(objs[store.PortKey("mgmt", "a")]) != "x" {
		t.Fatal("a port write was not applied")
	}
	del := &clientv3.Event{Type: clientv3.EventTypeDelete, Kv: &mvccpb.KeyValue{Key: []byte(store.PortKey("mgmt", "a"))}}
	if !applyEvents(objs, []*clientv3.Event{del}) || len(objs) != 0 {
		t.Fatal("a port delete was not applied")
	}
}
