package lab

// Router replicas in the lab: which one serves, read where the replicas'
// agents elect it (the store).

import (
	"context"
	"fmt"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/bothnia/bothnia/node"
	"github.com/bothnia/bothnia/spec"
	"github.com/bothnia/bothnia/store"
)

// RouterServing is the replica that serves the router now ("" for none),
// and the revision it was elected at.
func (l *Lab) RouterServing(ctx context.Context, s *spec.Spec) (string, int64, error) {
	if s.Router == nil || !s.Router.Replicated() {
		if s.Router != nil {
			return s.Router.Serving(), 0, nil
		}
		return "", 0, nil
	}
	cli, err := store.Connect(l.storeConfig())
	if err != nil {
		return "", 0, err
	}
	defer cli.Close()
	return routerServing(ctx, cli, s)
}

func routerServing(ctx context.Context, cli *clientv3.Client, s *spec.Spec) (string, int64, error) {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := cli.Get(rctx, store.RouterActiveKey(s.Router.Name))
	if err != nil {
		return "", 0, fmt.Errorf("lab: read the router's election: %w", err)
	}
	// The election's own revision: the holder's beats move the store's
	// (outside the prefix agents watch), never what an agent converges to.
	if len(resp.Kvs) == 0 || !slices.Contains(s.Router.Replicas(), string(resp.Kvs[0].Value)) {
		return "", 0, nil
	}
	return string(resp.Kvs[0].Value), resp.Kvs[0].ModRevision, nil
}

// waitRouter waits until a replica of a replicated router serves and
// every agent has converged to the election.
func (l *Lab) waitRouter(ctx context.Context, cli *clientv3.Client, fab *node.Fabric) error {
	s := fab.Spec
	if s.Router == nil || !s.Router.Replicated() {
		return nil
	}
	for {
		at, rev, err := routerServing(ctx, cli, s)
		if err == nil && at != "" {
			return l.waitConverged(ctx, cli, fab, rev)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("lab: no replica of router %s serves (agents' logs: %s)", s.Router.Name, l.ServiceLog("agent-<node>"))
		case <-time.After(20 * time.Millisecond):
		}
	}
}
