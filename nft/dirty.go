package nft

// dirtyTable is what may differ between the desired state of one table and
// what the kernel is believed to hold, since the last Apply. Elements are
// kept per set by their key, so marking one costs a map insert of a key
// the caller already has; a set whose whole content was replaced is marked
// once (allElems) rather than element by element: a starting agent's first
// Replace of 10,000 ports would otherwise mark 170,000 elements, and then
// walk them twice more to plan and to record them.
type dirtyTable struct {
	table    bool
	chains   map[string]bool
	sets     map[string]bool
	allElems map[string]bool
	elems    map[string]map[string]bool // set name -> element keys; a set is here only with a key
}

func newDirtyTable() *dirtyTable {
	return &dirtyTable{chains: map[string]bool{}, sets: map[string]bool{}, allElems: map[string]bool{}, elems: map[string]map[string]bool{}}
}

func (d *dirtyTable) elem(set, k string) {
	m := d.elems[set]
	if m == nil {
		m = map[string]bool{}
		d.elems[set] = m
	}
	m[k] = true
}

func (d *dirtyTable) empty() bool {
	return !d.table && len(d.chains) == 0 && len(d.sets) == 0 && len(d.allElems) == 0 && len(d.elems) == 0
}

// dirtyOf returns the table's dirty record, made on first use.
func (a *Applier) dirtyOf(tk string) *dirtyTable {
	d := a.dirty[tk]
	if d == nil {
		d = newDirtyTable()
		a.dirty[tk] = d
	}
	return d
}
