package firewall

import (
	"maps"
	"slices"
	"strings"
)

// A Knox host may run Neutron's linuxbridge agent beside bothnia's, for the
// networks that stay Neutron's. That agent, unmodified, installs its
// iptables chains for every tap named after a Neutron port, bothnia's
// included (its security group RPC answers for any port not owned by
// "network:"), and with br_netfilter on they would judge the fabric's
// traffic by Knox's Neutron alone, whose remote groups hold no ePouta
// member. Neutron leaves one chain to other tools: neutron-filter-top,
// jumped to first in FORWARD (iptables_manager.py writes Neutron's own
// rules first in every chain and keeps other tools' rules after them).
// An ACCEPT there for what a bothnia bridge bridges ends the iptables
// FORWARD hook for it before Neutron's chains; bothnia's own nftables
// tables, base chains of their own, still judge every such frame.
//
// Conntrack zones need no such rule: bothnia's zone chain runs before the
// raw table (zonePriority), so Neutron's CT --zone on a fabric tap finds
// the packet's template already set and does nothing.

const (
	neutronTop     = "neutron-filter-top"
	neutronComment = "bothnia: judged by table inet bothnia-fw"
)

// topRule is the rule, as iptables -S prints it, that lets what a
// bothnia bridge bridges skip Neutron's FORWARD chains.
func topRule(bridge string) string {
	return "-A " + neutronTop + " -i " + bridge + " -o " + bridge + ` -m comment --comment "` + neutronComment + `" -j ACCEPT`
}

// neutronTopper keeps topRule for each of bothnia's bridges in
// neutron-filter-top, in iptables and ip6tables, wherever Neutron's agent
// made that chain; it adds and removes only its own rules and makes the
// chain never (no Neutron there: nothing to skip).
type neutronTopper struct {
	ns   string
	run  Runner
	last []string // bridges of the last sync; nil before the first
}

// sync makes the chains hold one rule per bridge. force reads the kernel
// even if the bridges are the ones of the last sync (a resync: Neutron's
// agent may have started since, or rewritten its tables).
func (n *neutronTopper) sync(bridges []string, force bool) ([]string, error) {
	if !force && n.last != nil && slices.Equal(n.last, bridges) {
		return nil, nil
	}
	var changes []string
	for _, cmd := range []string{"iptables", "ip6tables"} {
		out, err := n.run(n.ns, "", cmd, "-w", "-S", neutronTop)
		if err != nil {
			continue // no such chain (or no such command): no Neutron here
		}
		have := map[string]bool{}
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, neutronComment) {
				have[strings.TrimSpace(line)] = true
			}
		}
		want := map[string]bool{}
		for _, br := range bridges {
			want[topRule(br)] = true
		}
		for _, r := range slices.Sorted(maps.Keys(have)) {
			if !want[r] {
				if _, err := n.run(n.ns, "", cmd, append([]string{"-w", "-D"}, ruleArgs(r)...)...); err != nil {
					return changes, err
				}
				changes = append(changes, cmd+" delete "+r)
			}
		}
		for _, r := range slices.Sorted(maps.Keys(want)) {
			if !have[r] {
				if _, err := n.run(n.ns, "", cmd, append([]string{"-w", "-A"}, ruleArgs(r)...)...); err != nil {
					return changes, err
				}
				changes = append(changes, cmd+" add "+r)
			}
		}
	}
	n.last = slices.Clone(bridges)
	return changes, nil
}

// ruleArgs splits a rule as iptables -S prints it into the arguments
// after -A/-D: the chain and its matches, the comment one argument.
func ruleArgs(r string) []string {
	before, comment, _ := strings.Cut(strings.TrimPrefix(r, "-A "), `"`+neutronComment+`"`)
	args := strings.Fields(before)
	return append(append(args, neutronComment), strings.Fields(comment)...)
}
