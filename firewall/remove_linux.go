package firewall

import (
	"fmt"
	"slices"
	"strings"
)

// Remove deletes everything either renderer of bothnia's firewall put in
// the namespace ("" is this process's own: a real host's root): the
// nftables tables, the iptables layout's chains and the jumps into them,
// its ebtables chains and, where Neutron's agent keeps none (its sets
// share the layout's names), its ipsets; and bothnia's rules in Neutron's
// neutron-filter-top. Nothing of another owner's is touched. What it
// deleted is returned; on a host with nothing of bothnia's, nothing.
func Remove(ns string, run Runner) ([]string, error) {
	if run == nil {
		run = ExecIn
	}
	x, err := NewNFT(ns)
	if err != nil {
		return nil, err
	}
	changes, err := x.Remove()
	x.Close()
	if err != nil {
		return nil, fmt.Errorf("firewall: delete bothnia's nftables tables in %q: %w", ns, err)
	}

	top, err := (&neutronTopper{ns: ns, run: run}).sync(nil, true)
	changes = append(changes, top...)
	if err != nil {
		return changes, err
	}

	// The iptables layout's tables, ebtables' beside them: each saved,
	// and bothnia's jumps and chains deleted in one restore.
	tables := slices.Clone(iptTables)
	for _, t := range ebTables {
		tables = append(tables, iptTable{"ebtables-nft", t.name, t.builtins})
	}
	neutron := false
	for _, t := range tables {
		out, err := run(ns, "", t.cmd+"-save", "-t", t.table)
		if err != nil {
			continue // no such command or table: nothing of the layout's
		}
		in, what := removeInput(out, t.builtins)
		neutron = neutron || strings.Contains(out, ":"+neutronTop+" ")
		if in == "" {
			continue
		}
		if _, err := run(ns, "*"+t.table+"\n"+in+"COMMIT\n", t.cmd+"-restore", "--noflush"); err != nil {
			return changes, err
		}
		for _, w := range what {
			changes = append(changes, t.cmd+" -t "+t.table+" "+w)
		}
	}
	if neutron {
		return changes, nil
	}
	out, err := run(ns, "", "ipset", "list", "-n")
	if err != nil {
		return changes, nil
	}
	for _, name := range strings.Fields(out) {
		if strings.HasPrefix(name, "NIPv4") || strings.HasPrefix(name, "NIPv6") {
			if _, err := run(ns, "", "ipset", "destroy", name); err != nil {
				return changes, err
			}
			changes = append(changes, "ipset destroy "+name)
		}
	}
	return changes, nil
}

// removeInput is the restore input that deletes the jumps into bothnia's
// chains from the built-in ones and then the chains themselves, from what
// the save command printed; and a line per deletion.
func removeInput(saved string, builtins []string) (string, []string) {
	var b strings.Builder
	var what, chains []string
	for _, line := range strings.Split(saved, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) > 0 && strings.HasPrefix(f[0], ":"+iptPrefix):
			chains = append(chains, f[0][1:])
		case len(f) > 2 && f[0] == "-A" && slices.Contains(builtins, f[1]) && strings.Contains(line, "-j "+iptPrefix):
			b.WriteString("-D" + strings.TrimPrefix(line, "-A") + "\n")
			what = append(what, "delete "+strings.TrimPrefix(line, "-A "))
		}
	}
	for _, ch := range chains {
		fmt.Fprintf(&b, "-F %s\n", ch)
	}
	for _, ch := range chains {
		fmt.Fprintf(&b, "-X %s\n", ch)
		what = append(what, "delete chain "+ch)
	}
	return b.String(), what
}
