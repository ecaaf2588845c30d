package trace

import (
	"fmt"
	"strings"
)

// Hop is a node (or a node's router) where the kernel traced the packet.
type Hop struct {
	Node   string `json:"node"`
	Router bool   `json:"router,omitempty"` // the router's namespace on Node
	// Drop is the table and chain whose rule or policy dropped the packet
	// there ("" if none did).
	Drop string `json:"drop,omitempty"`
}

func (h Hop) String() string {
	s := h.Node
	if h.Router {
		s = "the router on " + h.Node
	}
	if h.Drop != "" {
		s += " (dropped in " + h.Drop + ")"
	}
	return s
}

// KernelHop turns one line of `nft monitor trace` ("trace id ID FAMILY
// TABLE CHAIN ...") seen at node (router: in its router's namespace) into
// the hop it tells of, and whether it dropped the packet.
func KernelHop(node string, router bool, line string) (Hop, bool) {
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "trace" || f[1] != "id" {
		return Hop{}, false
	}
	h := Hop{Node: node, Router: router}
	if strings.Contains(line, "verdict drop") || strings.Contains(line, "policy drop") {
		h.Drop = f[3] + " " + f[4] + " " + f[5]
	}
	return h, true
}

// Compare holds the kernel's path to the model's stages where the kernel
// can tell them apart, and returns each disagreement:
//
//   - a packet the kernel never saw leave the VM is one the model floods
//     unanswered on the VM's network, or sends from a network without a
//     router;
//   - a packet the model drops is dropped on the node of the stage that
//     drops it (the source's for anti-spoofing and egress, the
//     destination's for ingress), in a chain of that stage's kind, and a
//     route the router lacks is the router's: it saw the packet and no
//     rule dropped it;
//   - a packet the model delivers passes the source's node and the
//     destination's (or the router), and no rule drops it anywhere.
//
// The verdicts themselves are compared apart.
func (t *Trace) Compare(hops []Hop) []string {
	var out []string
	var drops []Hop
	seen := map[Hop]bool{}
	for _, h := range hops {
		if h.Drop != "" {
			drops = append(drops, h)
		}
		seen[Hop{Node: h.Node, Router: h.Router}] = true
	}
	if t.Verdict == "delivered" {
		for _, h := range drops {
			out = append(out, fmt.Sprintf("the model delivers it, the kernel dropped it at %s", h))
		}
		want := []Hop{{Node: t.SrcNode}}
		if t.DstNode != "" {
			want = append(want, Hop{Node: t.DstNode})
		}
		if t.RouterNode != "" {
			want = append(want, Hop{Node: t.RouterNode, Router: true})
		}
		for _, h := range want {
			if !seen[h] {
				out = append(out, fmt.Sprintf("the model passes %s, the kernel did not trace it there", h))
			}
		}
		return out
	}
	last := t.deciding()
	if len(hops) == 0 {
		// The packet never left the VM: right when the model floods it
		// unanswered on the VM's own network, or the network has no
		// router (the VM has no route out).
		if last.Stage == "bridge" || (last.Stage == "route" && t.RouterNode == "") {
			return nil
		}
		return []string{fmt.Sprintf("the model's packet reaches its %s stage, the kernel's never left the VM", last.Stage)}
	}
	switch last.Stage {
	case "anti-spoofing", "egress", "ingress":
		node := t.SrcNode
		if last.Stage == "ingress" {
			node = t.DstNode
		}
		if len(drops) == 0 {
			return []string{fmt.Sprintf("the model drops it at %s on %s, no kernel rule dropped it", last.Stage, node)}
		}
		d := drops[0]
		if d.Node != node || d.Router {
			out = append(out, fmt.Sprintf("the model drops it at %s on %s, the kernel at %s", last.Stage, node, d))
		}
		if kind := chainKind(d.Drop); kind != "" && kind != last.Stage && !(kind == "group" && last.Stage != "anti-spoofing") {
			out = append(out, fmt.Sprintf("the model drops it at %s, the kernel in %s, a chain of %s", last.Stage, d.Drop, kind))
		}
	case "route":
		if t.RouterNode != "" && !seen[Hop{Node: t.RouterNode, Router: true}] {
			out = append(out, fmt.Sprintf("the model drops it at the router on %s for want of a route, the kernel did not trace it there", t.RouterNode))
		}
		for _, h := range drops {
			out = append(out, fmt.Sprintf("the model drops it for want of a route, a kernel rule dropped it at %s", h))
		}
	}
	return out
}

// deciding is the stage that dropped the packet in the model: the last
// one.
func (t *Trace) deciding() Stage {
	if len(t.Stages) == 0 {
		return Stage{}
	}
	return t.Stages[len(t.Stages)-1]
}

// chainKind is the stage a dropping chain belongs to, as bothnia renders
// the firewall: the bridge table is anti-spoofing (and tagged frames); in
// the iptables layout (Neutron's names, bothnia's prefix) bothnia-s<port>
// is anti-spoofing, bothnia-o<port> egress, bothnia-i<port> ingress.
// "group" is a chain either direction uses; "" one it cannot tell. A
// foreign site's Neutron (its linuxbridge agent's chains) is read the
// same way.
func chainKind(drop string) string {
	f := strings.Fields(drop)
	if len(f) != 3 {
		return ""
	}
	table, chain := f[1], f[2]
	if n, ok := strings.CutPrefix(chain, "neutron-linuxbri-"); ok {
		chain = "bothnia-" + n
	}
	switch {
	case table == "bothnia-l2":
		return "anti-spoofing"
	case table == "bothnia-fw":
		return "group"
	case strings.HasPrefix(chain, "bothnia-s"):
		if chain == "bothnia-sg-fallback" || chain == "bothnia-sg-chain" {
			return "group"
		}
		return "anti-spoofing"
	case strings.HasPrefix(chain, "bothnia-o"):
		return "egress"
	case strings.HasPrefix(chain, "bothnia-i"):
		return "ingress"
	}
	return ""
}
