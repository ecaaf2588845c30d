package lab

import (
	"context"
	"encoding/json"
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

// EtcdURL is the lab's first store endpoint (its only one, with one
// member).
func (l *Lab) EtcdURL() string { return l.EtcdEndpoints()[0] }

// EtcdEndpoints are the lab's etcd members' client sockets.
func (l *Lab) EtcdEndpoints() []string {
	var out []string
	for _, m := range l.etcdMembers() {
		out = append(out, "unix://"+filepath.Join(l.stateDir(), m+".sock"))
	}
	return out
}

// clusterNames are the members of a three-member lab cluster, named as
// deploy/README.md's: two at Knox, one at ePouta.
var clusterNames = []string{"knox-1", "knox-2", "epouta-1"}

// etcdMembers names the lab's etcd services: "etcd" alone, or one per
// member of a cluster. A running lab says which in its state directory,
// so that a later command (lab vm add) finds the cluster it started.
func (l *Lab) etcdMembers() []string {
	b, err := os.ReadFile(filepath.Join(l.stateDir(), "etcd-members"))
	if err == nil && len(strings.Fields(string(b))) > 0 {
		return strings.Fields(string(b))
	}
	if l.EtcdMembers > 1 {
		var out []string
		for _, n := range clusterNames {
			out = append(out, "etcd-"+n)
		}
		return out
	}
	return []string{"etcd"}
}

// etcdServices are the processes of the lab's store: one member, or a
// cluster whose members reach each other on loopback ports.
func (l *Lab) etcdServices() ([]service, error) {
	members := l.etcdMembers()
	if err := os.WriteFile(filepath.Join(l.stateDir(), "etcd-members"), []byte(strings.Join(members, "\n")+"\n"), 0o644); err != nil {
		return nil, err
	}
	if len(members) == 1 {
		listen := l.EtcdURL()
		if l.StoreHTTP {
			u, err := l.storeHTTP()
			if err != nil {
				return nil, err
			}
			listen += "," + u
		}
		return []service{{name: "etcd", args: []string{"etcd", "--data-dir", filepath.Join(l.stateDir(), "etcd"), "--listen-client", listen}}}, nil
	}
	// The peer ports are kept with the cluster: a member restarted later
	// must find the others where the cluster was formed.
	peersFile := filepath.Join(l.stateDir(), "etcd-peers")
	var peers []string
	if b, err := os.ReadFile(peersFile); err == nil {
		peers = strings.Fields(string(b))
	}
	if len(peers) != len(members) {
		peers = nil
		for _, m := range members {
			port, err := store.FreeLoopbackPort()
			if err != nil {
				return nil, err
			}
			peers = append(peers, fmt.Sprintf("%s=http://127.0.0.1:%d", strings.TrimPrefix(m, "etcd-"), port))
		}
		if err := os.WriteFile(peersFile, []byte(strings.Join(peers, "\n")+"\n"), 0o644); err != nil {
			return nil, err
		}
	}
	var svcs []service
	for i, m := range members {
		name, peer, _ := strings.Cut(peers[i], "=")
		svcs = append(svcs, service{name: m, args: []string{"etcd", "--name", name, "--data-dir", filepath.Join(l.stateDir(), m),
			"--listen-client", l.EtcdEndpoints()[i], "--listen-peer", peer, "--initial-cluster", strings.Join(peers, ",")}})
	}
	return svcs, nil
}

// storeHTTP is the store's HTTP address on loopback (for bothnia's ML2
// driver in a Neutron of the lab's), chosen once and kept with the lab.
func (l *Lab) storeHTTP() (string, error) {
	f := filepath.Join(l.stateDir(), "etcd-http")
	if b, err := os.ReadFile(f); err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	port, err := store.FreeLoopbackPort()
	if err != nil {
		return "", err
	}
	u := fmt.Sprintf("http://127.0.0.1:%d", port)
	return u, os.WriteFile(f, []byte(u+"\n"), 0o644)
}

// StoreHTTPURL is where the running lab's store answers HTTP (etcd's
// JSON gateway), or "" if it does not.
func (l *Lab) StoreHTTPURL() string {
	b, _ := os.ReadFile(filepath.Join(l.stateDir(), "etcd-http"))
	return strings.TrimSpace(string(b))
}

// AgentAddr is where a node's agent serves health and metrics, inside the
// node's namespace.
const AgentAddr = "127.0.0.1:9464"

func (l *Lab) storeConfig() store.ClientConfig {
	return store.ClientConfig{Endpoints: l.EtcdEndpoints()}
}

// controlPlane starts etcd and the agents that are not running yet,
// pushes the spec, and waits until every node's agent has converged to
// it. It returns a line per object pushed and per process started.
func (l *Lab) controlPlane(fab *node.Fabric) ([]string, error) {
	if err := os.MkdirAll(l.stateDir(), 0o755); err != nil {
		return nil, err
	}
	members, err := l.etcdServices()
	if err != nil {
		return nil, err
	}
	changes, err := l.startServices(members)
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
	for _, st := range fab.Nodes {
		if l.cloudRuns(st) {
			continue
		}
		agents = append(agents, l.agent(st.Name, st.Plan.Foreign))
	}
	started, err := l.startServices(agents)
	changes = append(changes, started...)
	if err != nil {
		return changes, err
	}
	if err := l.waitConverged(ctx, cli, fab, rev); err != nil {
		return changes, err
	}
	if l.KeepalivedPeer {
		return changes, nil // keepalived, started with the servers, elects
	}
	return changes, l.waitRouter(ctx, cli, fab)
}

// agent is a node's bothnia agent as the lab runs it.
func (l *Lab) agent(node string, foreign bool) service {
	resync := l.Resync
	if resync == 0 {
		resync = 2 * time.Second
	}
	args := []string{"agent", "--node", node,
		"--etcd-endpoints", strings.Join(l.EtcdEndpoints(), ","), "--ns-prefix", l.SubPrefix(node), "--listen", AgentAddr, "--resync", resync.String(), "--debug",
		"--conntrackd-conf", filepath.Join(l.conntrackdDir(node), "conntrackd.conf")}
	if foreign {
		// Standing in for the foreign cloud's own Neutron agent.
		args = append(args, "--foreign-stand-in")
	}
	if l.KeepalivedPeer {
		args = append(args, "--external-router-election")
	}
	return service{name: "agent-" + node, ns: l.NodeNS(node), args: args, netOnly: true}
}

// pushSpec writes the spec into the store, again when the store changed
// under it (nothing else pushes to the lab's store; a conflict is a race
// with the previous push's own writes).
func pushSpec(ctx context.Context, cli *clientv3.Client, s *spec.Spec) ([]store.Change, int64, error) {
	return store.PushRetrying(ctx, cli, s, true, 2*time.Second)
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
	// A member that hangs holds a read until the client gives up on its
	// connection (seconds); the next try goes to another member.
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	resp, err := cli.Get(rctx, store.Prefix+store.KindStatus+"/", clientv3.WithPrefix())
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
		if l.cloudRuns(n) {
			continue
		}
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
	if err := l.waitConverged(ctx, cli, fab, rev); err != nil {
		return changes, err
	}
	return changes, l.waitRouter(ctx, cli, fab)
}

// AgentsRunning reports whether the lab runs a control plane.
func (l *Lab) AgentsRunning() bool {
	for _, m := range l.etcdMembers() {
		if _, ok := running(l.pidFile(m)); ok {
			return true
		}
	}
	return false
}
