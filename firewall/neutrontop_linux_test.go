package firewall

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// fakeIPT is iptables for neutronTopper: chains by command, each a list of
// rules as iptables -S prints them.
type fakeIPT struct {
	chains map[string][]string // "iptables", "ip6tables" -> neutron-filter-top's rules; absent: no chain
	calls  []string
}

func (f *fakeIPT) run(ns, stdin, name string, args ...string) (string, error) {
	f.calls = append(f.calls, name+" "+strings.Join(args, " "))
	rules, ok := f.chains[name]
	if !ok {
		return "", fmt.Errorf("%s: No chain/target/match by that name", name)
	}
	switch args[1] {
	case "-S":
		return strings.Join(append([]string{"-N " + neutronTop}, rules...), "\n") + "\n", nil
	case "-A", "-D":
		// Back to the -S form: the comment quoted again.
		r := "-A " + strings.Join(args[2:], " ")
		r = strings.Replace(r, neutronComment, `"`+neutronComment+`"`, 1)
		if args[1] == "-A" {
			f.chains[name] = append(rules, r)
		} else {
			i := slices.Index(rules, r)
			if i < 0 {
				return "", fmt.Errorf("%s: bad rule (does a matching rule exist in that chain?): %s", name, r)
			}
			f.chains[name] = slices.Delete(rules, i, i+1)
		}
	}
	return "", nil
}

func TestNeutronTopKeepsOnlyItsOwnRules(t *testing.T) {
	foreign := "-A neutron-filter-top -i eth9 -j ACCEPT"
	f := &fakeIPT{chains: map[string][]string{"iptables": {foreign, topRule("brqgone")}}}
	n := neutronTopper{run: f.run}
	changes, err := n.sync([]string{"brq1", "brq2"}, false)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{foreign, topRule("brq1"), topRule("brq2")}
	if !slices.Equal(f.chains["iptables"], want) {
		t.Errorf("neutron-filter-top holds\n%s\nwant\n%s", strings.Join(f.chains["iptables"], "\n"), strings.Join(want, "\n"))
	}
	if len(changes) != 3 {
		t.Errorf("changes %q, want a delete and two adds", changes)
	}
	if _, ok := f.chains["ip6tables"]; ok {
		t.Error("made neutron-filter-top in ip6tables, where Neutron had none")
	}
	// The same bridges again: not a command run, unless forced.
	f.calls = nil
	if ch, err := n.sync([]string{"brq1", "brq2"}, false); err != nil || len(ch) != 0 || len(f.calls) != 0 {
		t.Errorf("unchanged bridges: changes %q, calls %q, err %v", ch, f.calls, err)
	}
	f.chains["iptables"] = []string{foreign} // Neutron's agent rewrote its tables
	if ch, err := n.sync([]string{"brq1", "brq2"}, true); err != nil || len(ch) != 2 {
		t.Errorf("resync after Neutron dropped the rules: changes %q, err %v", ch, err)
	}
}

func TestNeutronTopWithoutNeutron(t *testing.T) {
	f := &fakeIPT{chains: map[string][]string{}}
	n := neutronTopper{run: f.run}
	if ch, err := n.sync([]string{"brq1"}, true); err != nil || len(ch) != 0 {
		t.Errorf("a host without Neutron: changes %q, err %v", ch, err)
	}
}
