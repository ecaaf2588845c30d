package agent

import (
	"context"
	"maps"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/bothnia/bothnia/node"
	"github.com/bothnia/bothnia/plan"
	"github.com/bothnia/bothnia/spec"
	"github.com/bothnia/bothnia/store"
)

// Which of the node's ports are up: the tap is in its bridge and the
// node's firewall holds its rules (a converge that programmed them and
// left the port neither pending nor held). Neutron's side, bothnia's ML2
// driver, completes a port's provisioning when it sees the port here, so
// Nova gets network-vif-plugged once the VM can send, not before.
//
// One key per port under the node's status (store.PortUpKey), written
// when the port comes up and deleted when it goes: no lease, so an agent
// that restarts rewrites nothing that did not change.

// pendingTaps are the taps of a converge's pending ports.
func pendingTaps(res *node.Result) map[string]bool {
	pending := map[string]bool{}
	if res != nil {
		for _, p := range res.Pending {
			tap, _, _ := strings.Cut(p, " ")
			pending[tap] = true
		}
	}
	return pending
}

// upPorts are the ports of a converged node that are up (all but the
// pending ones), by Neutron port UUID, with their taps.
func upPorts(s *spec.Spec, st *node.State, pending map[string]bool) map[string]string {
	ids := map[string]string{} // tap -> port UUID
	for _, n := range s.Networks {
		for _, vm := range n.VMs {
			if vm.Node == st.Name {
				id := s.PortID(n, vm)
				ids[plan.TapName(id)] = id
			}
		}
	}
	out := map[string]string{}
	for _, p := range st.Plan.Ports {
		if id := ids[p.Name]; id != "" && !pending[p.Name] {
			out[id] = p.Name
		}
	}
	return out
}

func (a *Agent) setUp(up map[string]string) {
	a.mu.Lock()
	a.up = up
	a.mu.Unlock()
	select {
	case a.upChanged <- struct{}{}:
	default:
	}
}

// reportPorts keeps the node's port keys in the store as the last
// converge left the ports.
func (a *Agent) reportPorts(ctx context.Context, cli *clientv3.Client) {
	var written map[string]string // nil: read the store first
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-a.upChanged:
		}
		a.mu.Lock()
		up := a.up
		a.mu.Unlock()
		if up == nil {
			continue // no converge yet: the store keeps what it has
		}
		if written == nil {
			rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			resp, err := cli.Get(rctx, store.PortsUpPrefix(a.cfg.Node), clientv3.WithPrefix())
			cancel()
			if err != nil {
				continue
			}
			written = map[string]string{}
			for _, kv := range resp.Kvs {
				written[strings.TrimPrefix(string(kv.Key), store.PortsUpPrefix(a.cfg.Node))] = string(kv.Value)
			}
		}
		var ops []clientv3.Op
		for id, tap := range up {
			if written[id] != tap {
				ops = append(ops, clientv3.OpPut(store.PortUpKey(a.cfg.Node, id), tap))
			}
		}
		for id := range written {
			if _, ok := up[id]; !ok {
				ops = append(ops, clientv3.OpDelete(store.PortUpKey(a.cfg.Node, id)))
			}
		}
		ok := true
		for len(ops) > 0 && ok {
			n := min(len(ops), 128) // etcd's default --max-txn-ops
			rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := cli.Txn(rctx).Then(ops[:n]...).Commit()
			cancel()
			ok = err == nil
			ops = ops[n:]
		}
		if ok {
			written = maps.Clone(up)
		} else {
			written = nil // read back on the next round
		}
	}
}
