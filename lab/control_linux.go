package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/bothnia/bothnia/agent"
	"github.com/bothnia/bothnia/node"
	"github.com/bothnia/bothnia/spec"
	"github.com/bothnia/bothnia/store"
)

// The lab's control plane: an embedded etcd (a process in the root
// namespace, serving only a unix socket in the lab's state directory) and
// one agent per node namespace, started as `ip netns exec <node> bothnia
// agent`, exactly as a real host runs it. The lab itself then only pushes
// specs; the agents converge their nodes.

// EtcdURL is the lab's store endpoint.
func (l *Lab) EtcdURL() string { return "unix://" + filepath.Join(l.stateDir(), "etcd.sock") }

// AgentAddr is where a node's agent serves health and metrics, inside the
// node's namespace.
const AgentAddr = "127.0.0.1:9464"

func (l *Lab) storeConfig() store.ClientConfig {
	return store.ClientConfig{Endpoints: []string{l.EtcdURL()}}
}

// controlPlane starts etcd and the agents that are not running yet,
// pushes the spec, and waits until every node's agent has converged to
// it. It returns a line per object pushed and per process started.
func (l *Lab) controlPlane(fab *node.Fabric) ([]string, error) {
	if err := os.MkdirAll(l.stateDir(), 0o755); err != nil {
		return nil, err
	}
	changes, err := l.startServices([]service{{name: "etcd", args: []string{"etcd", "--data-dir", filepath.Join(l.stateDir(), "etcd"), "--listen-client", l.EtcdURL()}}})
	if err != nil {
		return changes, err
	}
	cli, err := store.Connect(l.storeConfig())
	if err != nil {
		return changes, err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pushed, rev, err := pushSpec(ctx, cli, fab.Spec)
	for _, c := range pushed {
		changes = append(changes, "store: "+c.String())
	}
	if err != nil {
		return changes, err
	}
	var agents []service
	resync := l.Resync
	if resync == 0 {
		resync = 2 * time.Second
	}
	for _, st := range fab.Nodes {
		args := []string{"agent", "--node", st.Name,
			"--etcd-endpoints", l.EtcdURL(), "--ns-prefix", l.SubPrefix(st.Name), "--listen", AgentAddr, "--resync", resync.String(), "--debug"}
		if st.Plan.Foreign {
			// Standing in for the foreign cloud's own Neutron agent.
			args = append(args, "--foreign-stand-in")
		}
		agents = append(agents, service{name: "agent-" + st.Name, ns: l.NodeNS(st.Name), args: args, netOnly: true})
	}
	started, err := l.startServices(agents)
	changes = append(changes, started...)
	if err != nil {
		return changes, err
	}
	return changes, l.waitConverged(ctx, cli, fab, rev)
}

// pushSpec writes the spec into the store, again when the store changed
// under it (nothing else pushes to the lab's store; a conflict is a race
// with the previous push's own writes).
func pushSpec(ctx context.Context, cli *clientv3.Client, s *spec.Spec) ([]store.Change, int64, error) {
	for {
		changes, rev, err := store.Push(ctx, cli, s, true)
		if !errors.Is(err, store.ErrConflict) {
			return changes, rev, err
		}
	}
}

// waitConverged waits until every node's agent reports the revision (or
// a later one) converged and ready.
func (l *Lab) waitConverged(ctx context.Context, cli *clientv3.Client, fab *node.Fabric, rev int64) error {
	for {
		behind, err := l.agentsBehind(ctx, cli, fab, rev)
		if err == nil && len(behind) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return fmt.Errorf("lab: agents did not converge: %w", err)
			}
			return fmt.Errorf("lab: agents not converged to revision %d: %s (logs: %s)", rev, strings.Join(behind, "; "), l.ServiceLog("agent-<node>"))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (l *Lab) agentsBehind(ctx context.Context, cli *clientv3.Client, fab *node.Fabric, rev int64) ([]string, error) {
	resp, err := cli.Get(ctx, store.Prefix+store.KindStatus+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	got := map[string]agent.Status{}
	for _, kv := range resp.Kvs {
		var st agent.Status
		if json.Unmarshal(kv.Value, &st) == nil {
			got[st.Node] = st
		}
	}
	var behind []string
	for _, n := range fab.Nodes {
		st, ok := got[n.Name]
		switch {
		case !ok:
			behind = append(behind, n.Name+": no status yet")
		case !st.Ready:
			behind = append(behind, n.Name+": not ready: "+st.Error)
		case st.Revision < rev:
			behind = append(behind, fmt.Sprintf("%s: at revision %d", n.Name, st.Revision))
		}
	}
	slices.Sort(behind)
	return behind, nil
}

// Push writes a spec into the running lab's store and waits until every
// agent has converged to it. It returns the objects it changed.
func (l *Lab) Push(s *spec.Spec) ([]store.Change, error) {
	ls, err := LabSpec(s)
	if err != nil {
		return nil, err
	}
	fab, err := node.Desired(ls)
	if err != nil {
		return nil, err
	}
	cli, err := store.Connect(l.storeConfig())
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	changes, rev, err := pushSpec(ctx, cli, ls)
	if err != nil {
		return changes, err
	}
	return changes, l.waitConverged(ctx, cli, fab, rev)
}

// AgentsRunning reports whether the lab runs a control plane.
func (l *Lab) AgentsRunning() bool {
	_, ok := running(l.pidFile("etcd"))
	return ok
}
