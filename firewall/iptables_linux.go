package firewall

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"strings"

	"github.com/bothnia/bothnia/namespace"
)

// Runner runs a program inside a network namespace with the given input
// and returns its output. Tests and benchmarks may pass their own.
type Runner func(ns, stdin, name string, args ...string) (string, error)

// ExecIn is the real Runner: the child starts on a thread inside ns.
func ExecIn(ns, stdin, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := namespace.Do(ns, cmd.Start); err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	if err := cmd.Wait(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// IPT programs one node's firewall in the iptables layout. Like NFT it
// keeps what it believes the kernel holds and writes differences only:
// iptables-restore --noflush (and ip6tables-restore) rewrites just the
// chains that changed, ipset restore adds and deletes single members,
// ebtables-restore likewise.
type IPT struct {
	ns    string
	run   Runner
	have  *iptState         // nil: unknown, read on the next Program
	zones map[string]uint16 // bridge -> conntrack zone last programmed; nil: read the kernel
	// last is the fabric of the last Program, which Resync restores.
	last     *Fabric
	lastNode string
}

// iptTable is one of the four tables bothnia writes chains into, and the
// built-in chains it hooks them into (IPTJumps).
type iptTable struct {
	cmd, table string // ip6tables-nft, raw
	builtins   []string
}

var iptTables = []iptTable{
	{"iptables-nft", "raw", []string{"PREROUTING"}}, {"iptables-nft", "filter", []string{"FORWARD", "INPUT"}},
	{"ip6tables-nft", "raw", []string{"PREROUTING"}}, {"ip6tables-nft", "filter", []string{"FORWARD", "INPUT"}},
}

func (t iptTable) key() string { return t.cmd + " " + t.table }

// chains returns the rendering's chains for the table.
func (r *IPTables) chains(t iptTable) []IPTChain {
	switch t.key() {
	case "iptables-nft raw":
		return r.Raw
	case "iptables-nft filter":
		return r.Filter
	case "ip6tables-nft raw":
		return r.Raw6
	default:
		return r.Filter6
	}
}

type iptState struct {
	tables  map[string]map[string][]string // table key -> chain -> rule hashes
	jumps   map[string]bool                // table key + " " + built-in chain -> it jumps to bothnia's
	eb      map[string]map[string][]string // ebtables table -> chain -> rule args
	ebJumps map[string]map[string]bool     // ebtables table -> rule in a built-in chain
	sets    map[string]map[string]bool
	zones   map[string]uint16 // read back: bridge -> zone (IPv4 raw table)
	neutron bool              // Neutron's linuxbridge agent's chains are here
}

func newIPTState() *iptState {
	st := &iptState{tables: map[string]map[string][]string{}, jumps: map[string]bool{}, eb: map[string]map[string][]string{},
		ebJumps: map[string]map[string]bool{}, sets: map[string]map[string]bool{}, zones: map[string]uint16{}}
	for _, t := range iptTables {
		st.tables[t.key()] = map[string][]string{}
	}
	for _, t := range ebTables {
		st.eb[t.name], st.ebJumps[t.name] = map[string][]string{}, map[string]bool{}
	}
	return st
}

// NewIPT returns a programmer for the namespace using run (nil: ExecIn).
func NewIPT(ns string, run Runner) *IPT {
	if run == nil {
		run = ExecIn
	}
	return &IPT{ns: ns, run: run}
}

func (r *IPTables) state() *iptState {
	st := newIPTState()
	for _, t := range iptTables {
		for _, c := range r.chains(t) {
			st.tables[t.key()][c.Name] = hashes(c)
		}
		for _, bi := range t.builtins {
			st.jumps[t.key()+" "+bi] = true
		}
	}
	for _, t := range ebTables {
		chains, jumps := r.ebTable(t.name)
		for _, c := range chains {
			st.eb[t.name][c.Name] = []string{}
			for _, rule := range c.Rules {
				st.eb[t.name][c.Name] = append(st.eb[t.name][c.Name], rule.Args)
			}
		}
		for _, j := range jumps {
			st.ebJumps[t.name][j.Args] = true
		}
	}
	for _, s := range r.Sets {
		m := map[string]bool{}
		for _, p := range s.Members {
			m[p.String()] = true
		}
		st.sets[s.Name] = m
	}
	return st
}

func hashes(c IPTChain) []string {
	out := []string{}
	for _, r := range c.Rules {
		out = append(out, r.Hash(c.Name))
	}
	return out
}

var hashRE = regexp.MustCompile(`bn:[0-9a-f]{16}`)

// read learns what the kernel holds from the save commands.
func (x *IPT) read() error {
	st := newIPTState()
	for _, t := range iptTables {
		out, err := x.run(x.ns, "", t.cmd+"-save", "-t", t.table)
		if err != nil {
			return err
		}
		chains := st.tables[t.key()]
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			switch {
			case len(f) > 0 && f[0] == ":"+neutronTop:
				st.neutron = true
			case len(f) > 0 && strings.HasPrefix(f[0], ":"+iptPrefix):
				chains[f[0][1:]] = []string{}
			case len(f) > 1 && f[0] == "-A" && strings.HasPrefix(f[1], iptPrefix):
				h := hashRE.FindString(line)
				if h == "" {
					h = "foreign"
				}
				chains[f[1]] = append(chains[f[1]], h)
				if t.key() == "iptables-nft raw" {
					maps.Copy(st.zones, ParseZones([]string{line}))
				}
			case len(f) > 1 && f[0] == "-A" && slices.Contains(t.builtins, f[1]) && hashRE.FindString(line) == IPTJumps[f[1]].Hash(f[1]):
				st.jumps[t.key()+" "+f[1]] = true
			}
		}
	}
	for _, t := range ebTables {
		out, err := x.run(x.ns, "", "ebtables-nft-save", "-t", t.name)
		if err != nil {
			return err
		}
		eb, jumps := st.eb[t.name], st.ebJumps[t.name]
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			switch {
			case len(f) > 0 && strings.HasPrefix(f[0], ":"+iptPrefix):
				eb[f[0][1:]] = []string{}
			case len(f) > 2 && f[0] == "-A" && strings.HasPrefix(f[1], iptPrefix):
				eb[f[1]] = append(eb[f[1]], strings.Join(f[2:], " "))
			case len(f) > 2 && f[0] == "-A" && slices.Contains(t.builtins, f[1]) && strings.Contains(line, "-j "+iptPrefix):
				jumps[strings.Join(f[1:], " ")] = true
			}
		}
	}
	out, err := x.run(x.ns, "", "ipset", "save")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) > 1 && f[0] == "create" && (strings.HasPrefix(f[1], "NIPv4") || strings.HasPrefix(f[1], "NIPv6")):
			st.sets[f[1]] = map[string]bool{}
		case len(f) > 2 && f[0] == "add" && st.sets[f[1]] != nil:
			m := f[2]
			if !strings.Contains(m, "/") {
				if strings.Contains(m, ":") {
					m += "/128"
				} else {
					m += "/32"
				}
			}
			if p, err := netip.ParsePrefix(m); err == nil {
				m = p.String()
			}
			st.sets[f[1]][m] = true
		}
	}
	x.have = st
	return nil
}

// Program makes the node's iptables, ip6tables, ebtables and ipsets match
// the fabric and returns a line per chain, set member or jump it wrote.
func (x *IPT) Program(f *Fabric, node string) ([]string, error) {
	return x.program(f, node, false)
}

// ProgramFull rewrites every chain whatever the kernel holds: a full
// iptables-restore of the layout, as Neutron's agent does after a restart.
func (x *IPT) ProgramFull(f *Fabric, node string) ([]string, error) {
	return x.program(f, node, true)
}

// Resync reads the kernel back and rewrites what differs from the last
// Program's fabric; it returns what it rewrote.
func (x *IPT) Resync() ([]string, error) {
	if x.last == nil {
		return nil, nil
	}
	x.have = nil
	return x.program(x.last, x.lastNode, false)
}

// Zones is the conntrack zone of each bridge, as last programmed.
func (x *IPT) Zones() map[string]uint16 { return x.zones }

// Close is a no-op: the iptables programmer holds no handles.
func (x *IPT) Close() {}

func (x *IPT) program(f *Fabric, node string, full bool) ([]string, error) {
	x.last, x.lastNode = f, node
	if err := (&NFT{ns: x.ns}).bridgeHooks(); err != nil {
		return nil, err
	}
	if x.have == nil {
		if err := x.read(); err != nil {
			x.have = nil
			return nil, err
		}
		if x.zones == nil {
			x.zones = x.have.zones
		}
	}
	if x.have.neutron {
		// Neutron writes its jumps first in FORWARD and raw PREROUTING,
		// so its chains, which end in ACCEPT, and its CT --zone would
		// decide a fabric tap's traffic before this layout's.
		x.have = nil
		return nil, fmt.Errorf("firewall: node %s: Neutron's linuxbridge agent has its chains in this host's iptables (%s): the iptables layout cannot keep them off bothnia's taps; use the nftables renderer (firewall: nftables, the default), which can", node, neutronTop)
	}
	x.zones = f.Zones(node, x.zones)
	want := RenderIPTablesZones(f, node, x.zones)
	if full {
		for k := range x.have.tables {
			x.have.tables[k] = map[string][]string{}
		}
	}
	ws := want.state()
	var changes []string
	// Each set is restored on its own: ipset restore stops at the first
	// line it refuses, and one set's trouble must not keep the others'
	// members (or their removal) from the kernel.
	var setsIn []string
	var setsOut strings.Builder
	for _, s := range want.Sets {
		var in strings.Builder
		have := x.have.sets[s.Name]
		if have == nil {
			fmt.Fprintf(&in, "create %s hash:net family %s -exist\n", s.Name, s.Family())
			changes = append(changes, "ipset create "+s.Name)
		}
		for _, m := range s.Members {
			if !have[m.String()] {
				fmt.Fprintf(&in, "add %s %s -exist\n", s.Name, m)
				changes = append(changes, fmt.Sprintf("ipset add %s %s", s.Name, m))
			}
		}
		if in.Len() > 0 {
			setsIn = append(setsIn, in.String())
		}
		for m := range have {
			if !ws.sets[s.Name][m] {
				fmt.Fprintf(&setsOut, "del %s %s -exist\n", s.Name, m)
				changes = append(changes, fmt.Sprintf("ipset del %s %s", s.Name, m))
			}
		}
	}
	for name := range x.have.sets {
		if ws.sets[name] == nil {
			fmt.Fprintf(&setsOut, "destroy %s\n", name)
			changes = append(changes, "ipset destroy "+name)
		}
	}
	restores := map[string]*strings.Builder{"iptables-nft": {}, "ip6tables-nft": {}}
	for _, t := range iptTables {
		changes = append(changes, restoreTable(restores[t.cmd], t, want.chains(t), x.have.tables[t.key()], x.have.jumps)...)
	}
	var eb strings.Builder
	for _, t := range ebTables {
		chains, jumps := want.ebTable(t.name)
		changes = append(changes, restoreEb(&eb, t.name, chains, jumps, x.have.eb[t.name], x.have.ebJumps[t.name])...)
	}

	type step struct{ stdin, name string }
	var steps []step
	for _, in := range setsIn {
		steps = append(steps, step{in, "ipset"})
	}
	steps = append(steps, step{restores["iptables-nft"].String(), "iptables-nft-restore"},
		step{restores["ip6tables-nft"].String(), "ip6tables-nft-restore"},
		step{eb.String(), "ebtables-nft-restore"}, step{setsOut.String(), "ipset"})
	// Every step runs whatever an earlier one said: a refused set must
	// not keep the chains of every other port (new taps' rules, removed
	// rules) from the kernel. What failed is read back and tried again
	// on the next Program.
	var errs []error
	for _, st := range steps {
		if st.stdin == "" {
			continue
		}
		args := []string{"--noflush"}
		if st.name == "ipset" {
			args = []string{"restore"}
		}
		if _, err := x.run(x.ns, st.stdin, st.name, args...); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		x.have = nil
		return changes, errors.Join(errs...)
	}
	x.have = ws
	return changes, nil
}

// restoreTable writes the iptables-restore input for one table: changed
// chains declared (which flushes them) and refilled, stale ones flushed and
// removed, and the jump from the built-in chain inserted if missing.
func restoreTable(b *strings.Builder, t iptTable, want []IPTChain, have map[string][]string, haveJumps map[string]bool) []string {
	table, cmd := t.table, strings.TrimSuffix(t.cmd, "-nft")
	var changes []string
	var decl, rules, del strings.Builder
	wantNames := map[string]bool{}
	for _, c := range want {
		wantNames[c.Name] = true
		h, ok := have[c.Name]
		if ok && equal(h, hashes(c)) {
			continue
		}
		fmt.Fprintf(&decl, ":%s - [0:0]\n", c.Name)
		for _, r := range c.Rules {
			fmt.Fprintln(&rules, r.Line(c.Name))
		}
		changes = append(changes, fmt.Sprintf("%s -t %s: write chain %s (%d rules)", cmd, table, c.Name, len(c.Rules)))
	}
	for _, name := range slices.Sorted(maps.Keys(have)) {
		if !wantNames[name] {
			fmt.Fprintf(&decl, ":%s - [0:0]\n", name)
			fmt.Fprintf(&del, "-X %s\n", name)
			changes = append(changes, fmt.Sprintf("%s -t %s: delete chain %s", cmd, table, name))
		}
	}
	for _, builtin := range t.builtins {
		if !haveJumps[t.key()+" "+builtin] {
			jump := IPTJumps[builtin]
			fmt.Fprintf(&rules, "-I %s 1 %s -m comment --comment %s\n", builtin, jump.Args, jump.Hash(builtin))
			changes = append(changes, fmt.Sprintf("%s -t %s: insert %s -> %s", cmd, table, builtin, jump.Args))
		}
	}
	if decl.Len()+rules.Len()+del.Len() == 0 {
		return nil
	}
	fmt.Fprintf(b, "*%s\n%s%s%sCOMMIT\n", table, decl.String(), rules.String(), del.String())
	return changes
}

// ebTables are the ebtables tables bothnia writes, with the built-in
// chains its rules jump from.
var ebTables = []struct {
	name     string
	builtins []string
}{{"nat", []string{"PREROUTING", "POSTROUTING"}}, {"filter", []string{"FORWARD"}}}

// ebTable is the rendering's chains and jumps in one ebtables table.
func (r *IPTables) ebTable(name string) ([]IPTChain, []IPTRule) {
	if name == "filter" {
		return r.EbFilter, r.EbFilterJumps
	}
	return r.Eb, r.EbJumps
}

func restoreEb(b *strings.Builder, table string, want []IPTChain, wantJ []IPTRule, have map[string][]string, haveJumps map[string]bool) []string {
	var changes []string
	var decl, rules, del strings.Builder
	wantNames := map[string]bool{}
	for _, c := range want {
		wantNames[c.Name] = true
		var args []string
		for _, r := range c.Rules {
			args = append(args, r.Args)
		}
		if h, ok := have[c.Name]; ok && equal(h, args) {
			continue
		}
		if _, ok := have[c.Name]; ok {
			fmt.Fprintf(&rules, "-F %s\n", c.Name)
		} else {
			fmt.Fprintf(&decl, ":%s RETURN\n", c.Name)
		}
		for _, a := range args {
			fmt.Fprintf(&rules, "-A %s %s\n", c.Name, a)
		}
		changes = append(changes, "ebtables -t "+table+": write chain "+c.Name)
	}
	wantJumps := map[string]bool{}
	for _, j := range wantJ {
		wantJumps[j.Args] = true
		if !haveJumps[j.Args] {
			fmt.Fprintf(&rules, "-A %s\n", j.Args)
			changes = append(changes, "ebtables -t "+table+": "+j.Args)
		}
	}
	for _, j := range slices.Sorted(maps.Keys(haveJumps)) {
		if !wantJumps[j] {
			fmt.Fprintf(&del, "-D %s\n", j)
			changes = append(changes, "ebtables -t "+table+": delete "+j)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(have)) {
		if !wantNames[name] {
			fmt.Fprintf(&del, "-F %s\n-X %s\n", name, name)
			changes = append(changes, "ebtables -t "+table+": delete chain "+name)
		}
	}
	if decl.Len()+rules.Len()+del.Len() == 0 {
		return nil
	}
	fmt.Fprintf(b, "*%s\n%s%s%s", table, decl.String(), rules.String(), del.String())
	return changes
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
