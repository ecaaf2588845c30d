package trace

import (
	"errors"
	"fmt"
)

// KernelTable is the nftables table trace --kernel adds, and removes, in
// each node and router namespace it watches.
const KernelTable = "bothnia-trace"

// KernelRules are that table: nftrace set on the traced packet's
// addresses, in the bridge and the inet prerouting hooks, before anything
// of bothnia's (or of the iptables layout's) sees it.
func KernelRules(t *Trace) string {
	match := fmt.Sprintf("ip saddr %s ip daddr %s", t.Src, t.Dst)
	return fmt.Sprintf(`table bridge %[1]s {
	chain pre { type filter hook prerouting priority -400; %[2]s meta nftrace set 1; }
}
table ip %[1]s {
	chain pre { type filter hook prerouting priority -400; %[2]s meta nftrace set 1; }
}
`, KernelTable, match)
}

// Traced is one line `nft monitor trace` printed in a namespace: a node's
// own, or (Router) its router's.
type Traced struct {
	NS, Node string
	Router   bool
	Line     string
}

// Judge is the kernel's verdict on a packet sent for real, from what the
// monitors printed while it went and whether it was answered: dropped if
// any rule or chain policy dropped it, delivered if nothing did and (for
// a packet with the VM's own source, not forged) it was answered; its path
// is held to the model's stages (Compare). An answered packet that no
// namespace traced is an error: the tracing did not work.
func (t *Trace) Judge(traced []Traced, answered, forged bool) (*Kernel, error) {
	if len(traced) == 0 && answered {
		return nil, errors.New("trace --kernel: the packet was answered, but no node traced it")
	}
	k := &Kernel{Verdict: "delivered"}
	var hops []Hop
	for _, tr := range traced {
		k.Lines = append(k.Lines, tr.NS+": "+tr.Line)
		if h, ok := KernelHop(tr.Node, tr.Router, tr.Line); ok {
			hops = append(hops, h)
		}
	}
	k.Hops = compact(hops)
	for _, h := range k.Hops {
		if h.Drop != "" {
			k.Verdict = "dropped"
		}
	}
	if k.Verdict == "delivered" && !forged && !answered {
		k.Verdict = "not answered, and no rule dropped it"
		for _, h := range k.Hops {
			if h.Router {
				// The router saw it and sent it nowhere: no route (the
				// allowlist), a routing decision, not a rule.
				k.Verdict = "dropped"
				k.Lines = append(k.Lines, "the router received it and had no route for it")
				break
			}
		}
	}
	k.Disagreements = t.Compare(k.Hops)
	if len(traced) == 0 && !answered {
		// Not on the VM's own network: nothing answers its neighbour
		// request, and the packet never leaves the VM.
		k.Verdict = "dropped"
		k.Lines = []string{"nothing traced: the packet never reached a node (no neighbour on the VM's network has the address)"}
	}
	return k, nil
}

// compact keeps a hop per node in the order the kernel saw them, with the
// first drop there.
func compact(hops []Hop) []Hop {
	var out []Hop
	at := map[Hop]int{}
	for _, h := range hops {
		key := Hop{Node: h.Node, Router: h.Router}
		i, ok := at[key]
		if !ok {
			i = len(out)
			at[key] = i
			out = append(out, key)
		}
		if out[i].Drop == "" {
			out[i].Drop = h.Drop
		}
	}
	return out
}
