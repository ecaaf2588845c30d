package guestlab

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/bothnia/bothnia/internal/guest"
	"github.com/bothnia/bothnia/internal/guest/wire"
	"github.com/bothnia/bothnia/node"
	"github.com/bothnia/bothnia/trace"
)

// TraceKernel is trace --kernel in the guests: the packet the model's
// trace describes is sent for real from the VM's namespace, with the same
// nftables tracing (trace.KernelRules) on in every node and router
// namespace of every guest, and judged as the lab judges it (Judge).
// Responders must be listening (listen) for a TCP packet to be answered. A
// forged packet (another source address or MAC) goes as one Ethernet
// frame from the VM's eth0, to the target VM's MAC (or broadcast when the
// target is not a VM), from the forged MAC or the VM's own.
func (f *Fabric) TraceKernel(ctx context.Context, t *trace.Trace, r trace.Request) (*trace.Kernel, error) {
	forged := r.SrcIP != "" || r.SrcMAC != ""
	if !t.Src.Is4() || !t.Dst.Is4() {
		return nil, errors.New("trace --kernel: IPv4 only")
	}
	// Each guest: the rules and a monitor in its own namespace and its
	// router's, each monitor writing to a file of its namespace's name.
	// The rules go in the script: the share is cached in the guests.
	arm := "set -e\ncat > /run/trace.nft <<'EOF'\n" + trace.KernelRules(t) + "EOF\n" + `
for ns in root $(ip netns list | awk '$1 ~ /^bn-qrouter-/ {print $1}'); do
  run=""; [ "$ns" = root ] || run="ip netns exec $ns"
  $run nft -f /run/trace.nft
  $run stdbuf -oL nft monitor trace > /run/trace-$ns.txt 2>/dev/null &
done`
	const collect = `pkill -f '^nft monitor trace' || true
sleep 0.2
for f in /run/trace-*.txt; do
  ns=$(basename "$f" .txt); ns=${ns#trace-}
  run=""; [ "$ns" = root ] || run="ip netns exec $ns"
  $run nft delete table bridge ` + trace.KernelTable + ` 2>/dev/null || true
  $run nft delete table ip ` + trace.KernelTable + ` 2>/dev/null || true
  grep '^trace id' "$f" | sed "s|^|$ns	|" || true
  rm -f "$f"
done`
	if err := f.onAll(ctx, arm, nil); err != nil {
		return nil, err
	}
	time.Sleep(1500 * time.Millisecond) // the monitors subscribe (slowly, emulated)
	var answered bool
	p := &prober{f}
	switch {
	case forged:
		if err := f.sendForged(ctx, t, r); err != nil {
			return nil, err
		}
	case t.Proto == 1:
		answered = p.ICMP(ctx, r.From, t.Dst) == nil
	case t.Proto == 6:
		_, err := p.TCP(ctx, r.From, t.Dst, t.DPort)
		answered = err == nil || strings.Contains(err.Error(), "connection refused")
	default:
		return nil, fmt.Errorf("guestlab: trace --kernel sends ICMP and TCP, not protocol %d", t.Proto)
	}
	time.Sleep(500 * time.Millisecond) // the last events arrive
	var mu sync.Mutex
	var traced []trace.Traced
	err := f.onAll(ctx, collect, func(node, out string) {
		mu.Lock()
		defer mu.Unlock()
		for _, l := range strings.Split(out, "\n") {
			ns, line, ok := strings.Cut(l, "\t")
			if !ok {
				continue
			}
			traced = append(traced, trace.Traced{NS: node + "/" + ns, Node: node, Router: ns != "root", Line: line})
		}
	})
	if err != nil {
		return nil, err
	}
	return t.Judge(traced, answered, forged)
}

// sendForged sends the trace's packet as one frame from the VM
// (trace.Frame).
func (f *Fabric) sendForged(ctx context.Context, t *trace.Trace, r trace.Request) error {
	frame, err := t.Frame(f.Spec, r)
	if err != nil {
		return err
	}
	resp, err := f.VMGuest(r.From).Do(ctx, wire.Request{Op: wire.OpFrame, Namespace: VMNS(r.From), Iface: "eth0", Frame: frame})
	if err == nil && resp.RC != 0 {
		err = errors.New(resp.Err)
	}
	return err
}

// onAll runs a script on every node's guest at once, handing each output
// to out.
func (f *Fabric) onAll(ctx context.Context, script string, out func(node, out string)) error {
	return f.each(func(st *node.State, g *guest.Guest) error {
		o, err := g.Sh(ctx, script)
		if err == nil && out != nil {
			out(st.Name, o)
		}
		return err
	})
}
