package nft

import (
	"fmt"
	"maps"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Applier keeps the desired state of some tables and what it believes the
// kernel holds, and writes only the difference. It follows felix's table:
// callers change the desired state (whole rulesets, or single chains and
// elements), which marks those objects dirty; Apply compares only dirty
// objects and writes their changes in one transaction. Resync reads the
// kernel back, so that whatever someone else changed becomes dirty and the
// next Apply repairs it.
//
// An Applier is not safe for concurrent use.
type Applier struct {
	nsFD  int // network namespace, 0 for the caller's own
	want  map[string]*tableState
	have  map[string]*tableState // nil entry: table absent
	dirty map[string]*dirtyTable
	order []string // table keys in the order they were first wanted
}

// NewApplier returns an applier for the namespace open at nsFD (0: the
// process's own). It knows nothing of the kernel until Resync.
func NewApplier(nsFD int) *Applier {
	return &Applier{nsFD: nsFD, want: map[string]*tableState{}, dirty: map[string]*dirtyTable{}}
}

// Socket buffers for a transaction: the kernel answers every message of a
// batch (rules are echoed back) before the first answer is read, and takes
// the whole batch in one send, so both buffers must hold a chunk.
const sockBuf = 64 << 20

// chunk is the most messages one transaction carries. Only a first
// programming of thousands of ports is larger; it is then written in
// several transactions, in dependency order, with the dispatch map
// entries last, so no port is dispatched to a chain still being filled.
const chunk = 4096

func bigBuffers(c *netlink.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		// The FORCE variants pass net.core.[rw]mem_max; bothnia runs as root.
		if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, sockBuf); e != nil {
			serr = e
		}
		if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sockBuf); e != nil {
			serr = e
		}
	})
	if err != nil {
		return err
	}
	return serr
}

func (a *Applier) conn() (*nftables.Conn, error) {
	opts := []nftables.ConnOption{nftables.WithSockOptions(bigBuffers)}
	if a.nsFD != 0 {
		opts = append(opts, nftables.WithNetNSFd(a.nsFD))
	}
	return nftables.New(opts...)
}

func (a *Applier) table(f nftables.TableFamily, name string) (*tableState, string) {
	tk := tableKey(f, name)
	t, ok := a.want[tk]
	if !ok {
		t = newTableState(f, name)
		a.want[tk] = t
		a.order = append(a.order, tk)
		a.dirtyOf(tk).table = true
	}
	return t, tk
}

// Replace makes rs the whole desired content of its tables. Cost is
// linear in the ruleset; use SetChain and SetElem for single changes.
func (a *Applier) Replace(rs *Ruleset) {
	for _, t := range rs.Tables {
		ts, tk := a.table(t.Family, t.Name)
		seen := map[string]bool{}
		for _, c := range t.Chains {
			seen[c.Name] = true
			a.setChain(ts, tk, c)
		}
		for _, name := range slices.Sorted(maps.Keys(ts.chains)) {
			if !seen[name] {
				delete(ts.chains, name)
				a.dirtyOf(tk).chains[name] = true
			}
		}
		seenSet := map[string]bool{}
		for _, s := range t.Sets {
			seenSet[s.Name] = true
			a.setSet(ts, tk, s)
			keys := make([]string, len(s.Elems))
			have := ts.elems[s.Name]
			if len(have) > 0 {
				want := make(map[string]bool, len(s.Elems))
				for i, e := range s.Elems {
					keys[i] = keyID(e)
					want[keys[i]] = true
				}
				for k := range have {
					if !want[k] {
						a.delElem(ts, tk, s.Name, k)
					}
				}
				for i, e := range s.Elems {
					a.setElemKey(ts, tk, s.Name, keys[i], e)
				}
				continue
			}
			// Nothing wanted before: the set's content is marked whole.
			m := make(map[string]Elem, len(s.Elems))
			for _, e := range s.Elems {
				m[keyID(e)] = e
			}
			ts.elems[s.Name] = m
			a.dirtyOf(tk).allElems[s.Name] = true
		}
		for _, name := range slices.Sorted(maps.Keys(ts.sets)) {
			if !seenSet[name] {
				delete(ts.sets, name)
				delete(ts.elems, name)
				d := a.dirtyOf(tk)
				d.sets[name], d.allElems[name] = true, true
			}
		}
	}
}

func (a *Applier) setChain(ts *tableState, tk string, c *Chain) {
	if old, ok := ts.chains[c.Name]; ok && sameHook(old.Hook, c.Hook) && sameRules(old.Rules, c.Rules) {
		return
	}
	ts.chains[c.Name] = c
	a.dirtyOf(tk).chains[c.Name] = true
}

func (a *Applier) setSet(ts *tableState, tk string, s *Set) {
	if old, ok := ts.sets[s.Name]; ok && sameSetType(old, s) {
		return
	}
	ts.sets[s.Name] = &Set{Name: s.Name, KeyType: s.KeyType, DataType: s.DataType, Map: s.Map, Interval: s.Interval, Concat: s.Concat}
	if ts.elems[s.Name] == nil {
		ts.elems[s.Name] = map[string]Elem{}
	}
	a.dirtyOf(tk).sets[s.Name] = true
}

func (a *Applier) setElem(ts *tableState, tk, set string, e Elem) {
	a.setElemKey(ts, tk, set, keyID(e), e)
}

func (a *Applier) setElemKey(ts *tableState, tk, set, k string, e Elem) {
	if old, ok := ts.elems[set][k]; ok && SameElem(old, e) {
		return
	}
	ts.elems[set][k] = e
	a.dirtyOf(tk).elem(set, k)
}

func (a *Applier) delElem(ts *tableState, tk, set, k string) {
	if _, ok := ts.elems[set][k]; !ok {
		return
	}
	delete(ts.elems[set], k)
	a.dirtyOf(tk).elem(set, k)
}

// SetChain makes one chain of a table desired as given.
func (a *Applier) SetChain(f nftables.TableFamily, table string, c *Chain) {
	ts, tk := a.table(f, table)
	a.setChain(ts, tk, c)
}

// DeleteChain makes a chain undesired.
func (a *Applier) DeleteChain(f nftables.TableFamily, table, chain string) {
	ts, tk := a.table(f, table)
	if _, ok := ts.chains[chain]; ok {
		delete(ts.chains, chain)
		a.dirtyOf(tk).chains[chain] = true
	}
}

// SetElem makes an element desired in a set the table already wants.
func (a *Applier) SetElem(f nftables.TableFamily, table, set string, e Elem) error {
	ts, tk := a.table(f, table)
	if ts.sets[set] == nil {
		return fmt.Errorf("nft: %s has no set %s", tk, set)
	}
	a.setElem(ts, tk, set, e)
	return nil
}

// DeleteElem makes an element (by key) undesired.
func (a *Applier) DeleteElem(f nftables.TableFamily, table, set string, e Elem) {
	ts, tk := a.table(f, table)
	a.delElem(ts, tk, set, keyID(e))
}

// Desired returns the desired ruleset, for display.
func (a *Applier) Desired() *Ruleset {
	rs := &Ruleset{}
	for _, tk := range a.order {
		ts := a.want[tk]
		t := &Table{Family: ts.family, Name: ts.name}
		for _, sn := range slices.Sorted(maps.Keys(ts.sets)) {
			s := *ts.sets[sn]
			for _, k := range slices.Sorted(maps.Keys(ts.elems[sn])) {
				s.Elems = append(s.Elems, ts.elems[sn][k])
			}
			t.Sets = append(t.Sets, &s)
		}
		for _, cn := range slices.Sorted(maps.Keys(ts.chains)) {
			t.Chains = append(t.Chains, ts.chains[cn])
		}
		rs.Tables = append(rs.Tables, t)
	}
	return rs
}

// Pending reports whether Apply has anything to compare.
func (a *Applier) Pending() bool {
	for _, d := range a.dirty {
		if !d.empty() {
			return true
		}
	}
	return false
}

// Apply writes the difference between the dirty desired objects and the
// kernel in one transaction and returns a line per change. On failure the
// belief about the kernel is dropped, so the next Apply starts with a read.
func (a *Applier) Apply() ([]string, error) {
	if a.have == nil {
		// Nothing is known of the kernel yet (a new applier, or one whose
		// last transaction failed): read it back first.
		if _, err := a.Resync(); err != nil {
			return nil, err
		}
	}
	if !a.Pending() {
		return nil, nil
	}
	c, err := a.conn()
	if err != nil {
		return nil, err
	}
	b := &batch{c: c}
	for _, tk := range a.order {
		if d := a.dirty[tk]; d != nil && !d.empty() {
			if err := a.plan(b, tk); err != nil {
				return nil, err
			}
		}
	}
	if len(b.changes) == 0 {
		a.dirty = map[string]*dirtyTable{}
		return nil, nil
	}
	if err := b.emit(); err != nil {
		a.have = nil
		return nil, fmt.Errorf("nft: apply %d changes: %w", len(b.changes), err)
	}
	for _, tk := range a.order {
		a.commit(tk)
	}
	a.dirty = map[string]*dirtyTable{}
	return b.changes, nil
}

// batch collects one transaction's operations in the order the kernel
// needs them: objects before what refers to them, references removed
// before what they referred to.
type batch struct {
	c        *nftables.Conn
	err      error // first error queuing an operation (they are built lazily)
	changes  []string
	tables   []func()
	addSets  []func()
	delElems []func()
	addCh    []func()
	flushCh  []func()
	addRule  []func()
	addElems []func()
	delCh    []func()
	delSet   []func()

	// The element runs being filled: consecutive elements of one set go
	// in one message (a first programming of 10,000 ports is then a few
	// hundred messages, not 100,000, each with its own acknowledgement).
	addRun, delRun *elemRun
}

// elemRun is elements of one set written in one message.
type elemRun struct {
	set   *nftables.Set
	elems []nftables.SetElement
}

// maxRunElems bounds a message's elements: the element list is one
// netlink attribute, whose length is 16 bits.
const maxRunElems = 256

// maxElemLines is the most elements of one set an apply reports one by
// one; more are reported as a count.
const maxElemLines = 64

// appendRun adds elements to the open run of the set, or opens a new run
// (queued as one operation on ops) when the set differs or the run is full.
func (b *batch) appendRun(run **elemRun, ops *[]func(), ns *nftables.Set, els []nftables.SetElement, del bool) {
	r := *run
	if r == nil || r.set != ns || len(r.elems)+len(els) > maxRunElems {
		r = &elemRun{set: ns}
		*run = r
		*ops = append(*ops, func() {
			if del {
				b.keep(b.c.SetDeleteElements(r.set, r.elems))
			} else {
				b.keep(b.c.SetAddElements(r.set, r.elems))
			}
		})
	}
	r.elems = append(r.elems, els...)
}

func (b *batch) emit() error {
	n := 0
	for _, step := range [][]func(){b.tables, b.addSets, b.delElems, b.addCh, b.flushCh, b.addRule, b.addElems, b.delCh, b.delSet} {
		for _, f := range step {
			f()
			if b.err != nil {
				return b.err
			}
			if n++; n%chunk == 0 {
				if err := b.c.Flush(); err != nil {
					return err
				}
			}
		}
	}
	return b.c.Flush()
}

func (b *batch) note(format string, args ...any) {
	b.changes = append(b.changes, fmt.Sprintf(format, args...))
}

func (b *batch) keep(err error) {
	if err != nil && b.err == nil {
		b.err = err
	}
}

// addElem queues adding an element; delElem queues removing one.
func (b *batch) addElem(ns *nftables.Set, e Elem, s *Set) {
	b.appendRun(&b.addRun, &b.addElems, ns, toElems(e, s), false)
}

func (b *batch) delElem(ns *nftables.Set, e Elem, s *Set) {
	b.appendRun(&b.delRun, &b.delElems, ns, toElems(e, s), true)
}

// plan compares the dirty objects of one table and queues the writes.
func (a *Applier) plan(b *batch, tk string) error {
	want := a.want[tk]
	have := a.have[tk]
	t := &nftables.Table{Family: want.family, Name: want.name}
	if have == nil {
		b.tables = append(b.tables, func() { b.c.AddTable(t) })
		b.note("add table %s", tk)
		have = newTableState(want.family, want.name)
	}
	sets := map[string]*nftables.Set{}
	nset := func(name string, s *Set) *nftables.Set {
		if ns, ok := sets[name]; ok {
			return ns
		}
		ns := &nftables.Set{Table: t, Name: name, KeyType: s.KeyType, DataType: s.DataType, IsMap: s.Map, Interval: s.Interval, Concatenation: s.Concat}
		sets[name] = ns
		return ns
	}
	d := a.dirty[tk]
	newSets := map[string]bool{}
	for name := range d.sets {
		ws, hs := want.sets[name], have.sets[name]
		switch {
		case ws != nil && hs == nil:
			ns := nset(name, ws)
			newSets[name] = true
			b.addSets = append(b.addSets, func() { b.keep(b.c.AddSet(ns, nil)) })
			b.note("add %s %s %s", setKind(ws), tk, name)
		case ws == nil && hs != nil:
			ns := nset(name, hs)
			b.delSet = append(b.delSet, func() { b.c.DelSet(ns) })
			b.note("delete %s %s %s", setKind(hs), tk, name)
		case ws != nil && !sameSetType(ws, hs):
			// The kernel cannot retype a set in use, and bothnia's set
			// names carry their type, so this is someone else's object.
			return fmt.Errorf("nft: %s: set %s exists with another type; delete the table to let bothnia recreate it", tk, name)
		}
	}
	// Elements: every wanted element of a new set, and the dirty ones.
	for _, name := range slices.Sorted(maps.Keys(newSets)) {
		ws := want.sets[name]
		elems := want.elems[name]
		ns := nset(name, ws)
		if ws.Interval {
			// Ranges go in order, as nft itself sends them.
			for _, k := range slices.Sorted(maps.Keys(elems)) {
				b.addElem(ns, elems[k], ws)
			}
		} else {
			// A hash set takes its elements in any order; sorting the
			// 170,000 of a first programming was a tenth of its plan.
			for _, e := range elems {
				b.addElem(ns, e, ws)
			}
		}
		// One line for a new set's elements: a first programming of
		// thousands of ports would otherwise report each of them.
		if len(elems) > 0 {
			b.note("add %d elements %s %s", len(elems), tk, name)
		}
	}
	// Dirty elements, set by set: consecutive elements of one set share a
	// message, and the dirty map's own order would interleave the sets
	// (180,000 elements went as nearly as many messages, each waiting for
	// its acknowledgement).
	bySet := map[string][]string{}
	for name, ks := range d.elems {
		if !newSets[name] && !d.allElems[name] {
			bySet[name] = slices.Collect(maps.Keys(ks))
		}
	}
	for name := range d.allElems {
		if !newSets[name] && want.sets[name] != nil {
			bySet[name] = union(want.elems[name], have.elems[name])
		}
	}
	for _, name := range slices.Sorted(maps.Keys(bySet)) {
		added, deleted := 0, 0
		var lines []string
		for _, k := range bySet[name] {
			we, wok := want.elems[name][k]
			he, hok := have.elems[name][k]
			if wok && hok && SameElem(we, he) {
				continue
			}
			if hok && have.sets[name] != nil {
				hs := have.sets[name]
				b.delElem(nset(name, hs), he, hs)
				if deleted++; added+deleted <= maxElemLines {
					lines = append(lines, fmt.Sprintf("delete element %s %s { %s }", tk, name, he.Text))
				}
			}
			if wok && want.sets[name] != nil {
				ws := want.sets[name]
				b.addElem(nset(name, ws), we, ws)
				if added++; added+deleted <= maxElemLines {
					lines = append(lines, fmt.Sprintf("add element %s %s { %s }", tk, name, we.Text))
				}
			}
		}
		if added+deleted <= maxElemLines {
			slices.Sort(lines)
			b.changes = append(b.changes, lines...)
			continue
		}
		// Thousands of ports changed at once: one line per set.
		if added > 0 {
			b.note("add %d elements %s %s", added, tk, name)
		}
		if deleted > 0 {
			b.note("delete %d elements %s %s", deleted, tk, name)
		}
	}
	// Chains.
	for name := range d.chains {
		wc, hc := want.chains[name], have.chains[name]
		switch {
		case wc != nil && hc != nil && sameHook(wc.Hook, hc.Hook) && sameRules(wc.Rules, hc.Rules):
		case wc != nil && hc != nil && sameHook(wc.Hook, hc.Hook):
			ch := nchain(t, wc)
			b.flushCh = append(b.flushCh, func() { b.c.FlushChain(ch) })
			a.queueRules(b, t, ch, wc, sets)
			b.note("replace chain %s %s (%d rules)", tk, name, len(wc.Rules))
		case wc != nil:
			if hc != nil { // a base chain whose hook changed
				old := nchain(t, hc)
				b.delRun = nil
				b.delElems = append(b.delElems, func() { b.c.FlushChain(old); b.c.DelChain(old) })
			}
			ch := nchain(t, wc)
			b.addCh = append(b.addCh, func() { b.c.AddChain(ch) })
			a.queueRules(b, t, ch, wc, sets)
			b.note("add chain %s %s (%d rules)", tk, name, len(wc.Rules))
		case hc != nil:
			ch := nchain(t, hc)
			b.flushCh = append(b.flushCh, func() { b.c.FlushChain(ch) })
			b.delCh = append(b.delCh, func() { b.c.DelChain(ch) })
			b.note("delete chain %s %s", tk, name)
		}
	}
	return nil
}

func (a *Applier) queueRules(b *batch, t *nftables.Table, ch *nftables.Chain, c *Chain, sets map[string]*nftables.Set) {
	for _, r := range c.Rules {
		r := r
		b.addRule = append(b.addRule, func() {
			for _, e := range r.Exprs {
				// A set made in this same transaction is found by its ID.
				if l, ok := e.(*expr.Lookup); ok {
					if s, ok := sets[l.SetName]; ok && s.ID != 0 {
						l.SetID = s.ID
					}
				}
			}
			b.c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r.Exprs,
				UserData: userdata.AppendString(nil, userdata.TypeComment, r.Text)})
		})
	}
}

func nchain(t *nftables.Table, c *Chain) *nftables.Chain {
	ch := &nftables.Chain{Name: c.Name, Table: t}
	if c.Hook != nil {
		hn, pr, pol := c.Hook.Hooknum, nftables.ChainPriority(c.Hook.Priority), nftables.ChainPolicyAccept
		ch.Type, ch.Hooknum, ch.Priority, ch.Policy = c.Hook.Type, &hn, &pr, &pol
	}
	return ch
}

func toElems(e Elem, s *Set) []nftables.SetElement {
	if !s.Interval || s.Concat {
		// A concatenated range is one element with its (inclusive) end.
		return []nftables.SetElement{{Key: e.Key, KeyEnd: e.KeyEnd, Val: e.Val, VerdictData: e.Verdict}}
	}
	out := []nftables.SetElement{{Key: e.Key}}
	if !allZero(e.KeyEnd) {
		out = append(out, nftables.SetElement{Key: e.KeyEnd, IntervalEnd: true})
	}
	return out
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

func setKind(s *Set) string {
	if s.Map {
		return "map"
	}
	return "set"
}

// commit records that the kernel now holds the desired dirty objects.
func (a *Applier) commit(tk string) {
	want := a.want[tk]
	have := a.have[tk]
	if have == nil {
		have = newTableState(want.family, want.name)
		a.have[tk] = have
	}
	d := a.dirty[tk]
	if d == nil {
		return
	}
	for name := range d.chains {
		if c, ok := want.chains[name]; ok {
			have.chains[name] = c
		} else {
			delete(have.chains, name)
		}
	}
	whole := map[string]bool{}
	for name := range d.sets {
		if s, ok := want.sets[name]; ok {
			if hs, ok := have.sets[name]; !ok || !sameSetType(hs, s) {
				whole[name] = true
			}
			have.sets[name] = s
		} else {
			delete(have.sets, name)
			delete(have.elems, name)
		}
	}
	for name := range d.allElems {
		if want.sets[name] != nil && have.sets[name] != nil {
			whole[name] = true
		}
	}
	for name := range whole {
		// The kernel now holds exactly the wanted elements; the maps
		// must not be shared, as the wanted one changes with the next
		// Replace.
		have.elems[name] = maps.Clone(want.elems[name])
		if have.elems[name] == nil {
			have.elems[name] = map[string]Elem{}
		}
	}
	for name, ks := range d.elems {
		if whole[name] || d.allElems[name] || have.elems[name] == nil {
			continue
		}
		for k := range ks {
			if e, ok := want.elems[name][k]; ok {
				have.elems[name][k] = e
			} else {
				delete(have.elems[name], k)
			}
		}
	}
}

// DeleteTables removes tables entirely (teardown): the named ones, or,
// with none named, every table the applier owns. A table that does not
// exist is no error. It returns a line per table it deleted.
func (a *Applier) DeleteTables(tables ...*nftables.Table) ([]string, error) {
	c, err := a.conn()
	if err != nil {
		return nil, err
	}
	if len(tables) == 0 {
		for _, tk := range a.order {
			ts := a.want[tk]
			tables = append(tables, &nftables.Table{Family: ts.family, Name: ts.name})
		}
	}
	var deleted []string
	for _, t := range tables {
		if _, err := c.ListTableOfFamily(t.Name, t.Family); err != nil {
			continue
		}
		c.DelTable(t)
		deleted = append(deleted, "delete table "+tableKey(t.Family, t.Name))
	}
	a.want, a.have, a.dirty, a.order = map[string]*tableState{}, nil, map[string]*dirtyTable{}, nil
	if len(deleted) == 0 {
		return nil, nil
	}
	return deleted, c.Flush()
}
