package nft

import (
	"testing"

	"github.com/google/nftables"
)

func elemsRuleset(keys ...string) *Ruleset {
	s := &Set{Name: "ports", KeyType: nftables.TypeIFName}
	for _, k := range keys {
		s.Elems = append(s.Elems, KeyElem(k, IfName(k)))
	}
	return &Ruleset{Tables: []*Table{{Family: nftables.TableFamilyBridge, Name: "t", Sets: []*Set{s}}}}
}

// applied records what Apply would have written, without a kernel.
func applied(a *Applier) {
	if a.have == nil {
		a.have = map[string]*tableState{}
	}
	for _, tk := range a.order {
		a.commit(tk)
	}
	a.dirty = map[string]*dirtyTable{}
}

// A first Replace marks a set's content whole (no per-element marks); a
// later one marks exactly the elements that changed, and commit leaves
// what is believed of the kernel equal to what is wanted, in maps of its
// own.
func TestDirtyMarksWholeSetsThenElements(t *testing.T) {
	a := NewApplier(0)
	a.Replace(elemsRuleset("a", "b", "c"))
	d := a.dirty["bridge t"]
	if d == nil || !d.table || !d.sets["ports"] || !d.allElems["ports"] || len(d.elems) != 0 {
		t.Fatalf("first replace: %+v, want the table, the set and its whole content dirty, no single elements", d)
	}
	applied(a)
	if got := len(a.have["bridge t"].elems["ports"]); got != 3 {
		t.Fatalf("after the first apply the kernel is believed to hold %d elements, want 3", got)
	}

	a.Replace(elemsRuleset("a", "b", "d"))
	d = a.dirty["bridge t"]
	if d.table || len(d.sets) != 0 || len(d.allElems) != 0 || len(d.elems["ports"]) != 2 ||
		!d.elems["ports"][keyID(KeyElem("c", IfName("c")))] || !d.elems["ports"][keyID(KeyElem("d", IfName("d")))] {
		t.Fatalf("second replace: %+v, want only c (gone) and d (new) dirty", d)
	}
	applied(a)
	have, want := a.have["bridge t"].elems["ports"], a.want["bridge t"].elems["ports"]
	if len(have) != 3 || len(want) != 3 {
		t.Fatalf("have %d want %d elements, want 3 each", len(have), len(want))
	}
	for k := range want {
		if _, ok := have[k]; !ok {
			t.Fatalf("element %q wanted but not believed applied", k)
		}
	}
	// The two must not share a map: the next Replace changes want only.
	a.Replace(elemsRuleset())
	if len(a.have["bridge t"].elems["ports"]) != 3 {
		t.Fatal("a Replace changed what the kernel is believed to hold")
	}

	// A set no longer in the ruleset is dropped whole.
	a.Replace(&Ruleset{Tables: []*Table{{Family: nftables.TableFamilyBridge, Name: "t"}}})
	d = a.dirty["bridge t"]
	if !d.sets["ports"] || !d.allElems["ports"] {
		t.Fatalf("removed set: %+v, want the set dirty", d)
	}
	applied(a)
	if _, ok := a.have["bridge t"].sets["ports"]; ok {
		t.Fatal("a removed set is still believed to be in the kernel")
	}
}
