package nft

import (
	"bytes"
	"encoding/hex"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// tableState is one table as desired or as believed to be in the kernel.
type tableState struct {
	family nftables.TableFamily
	name   string
	chains map[string]*Chain
	sets   map[string]*Set // Elems unused; see elems
	elems  map[string]map[string]Elem
}

func newTableState(f nftables.TableFamily, name string) *tableState {
	return &tableState{family: f, name: name, chains: map[string]*Chain{}, sets: map[string]*Set{}, elems: map[string]map[string]Elem{}}
}

func tableKey(f nftables.TableFamily, name string) string { return families[f] + " " + name }

// ElemID identifies an element by its bytes: key (and range end), and the
// value or verdict it maps to. A read-back yields the same ID.
func ElemID(e Elem) string {
	id := hex.EncodeToString(e.Key)
	if e.KeyEnd != nil {
		id += "-" + hex.EncodeToString(e.KeyEnd)
	}
	switch {
	case e.Verdict != nil:
		id += "=" + verdictText(e.Verdict)
	case e.Val != nil:
		id += "=" + hex.EncodeToString(e.Val)
	}
	return id
}

// keyID identifies an element by its key alone: a map holds one value per key.
func keyID(e Elem) string {
	// The raw bytes: a map key, never printed. An end is set apart by its
	// length: a key's length is the set's, so "key" and "key+end" differ.
	if e.KeyEnd == nil {
		return string(e.Key)
	}
	b := make([]byte, 0, len(e.Key)+len(e.KeyEnd)+1)
	b = append(append(append(b, e.Key...), '-'), e.KeyEnd...)
	return string(b)
}

// SameElem reports whether two elements have the same ElemID, without
// building the IDs: the appliers compare every element of a node on every
// change, and the hex strings were most of that cost.
func SameElem(a, b Elem) bool {
	if !bytes.Equal(a.Key, b.Key) || !bytes.Equal(a.KeyEnd, b.KeyEnd) || (a.KeyEnd == nil) != (b.KeyEnd == nil) {
		return false
	}
	switch {
	case a.Verdict != nil || b.Verdict != nil:
		return a.Verdict != nil && b.Verdict != nil && verdictText(a.Verdict) == verdictText(b.Verdict)
	case a.Val != nil || b.Val != nil:
		return a.Val != nil && b.Val != nil && bytes.Equal(a.Val, b.Val)
	}
	return true
}

func verdictText(v *expr.Verdict) string {
	switch v.Kind {
	case expr.VerdictJump:
		return "jump " + v.Chain
	case expr.VerdictGoto:
		return "goto " + v.Chain
	case expr.VerdictAccept:
		return "accept"
	case expr.VerdictDrop:
		return "drop"
	case expr.VerdictReturn:
		return "return"
	}
	return "?"
}

func sameHook(a, b *Hook) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Type == b.Type && a.Hooknum == b.Hooknum && a.Priority == b.Priority
}

// sameRules compares rules by their text and, where both sides have them,
// by what they do: a rule edited by hand behind its unchanged comment is
// different.
func sameRules(a, b []Rule) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Text != b[i].Text {
			return false
		}
		if a[i].Exprs != nil && b[i].Exprs != nil && fingerprint(a[i].Exprs) != fingerprint(b[i].Exprs) {
			return false
		}
	}
	return true
}

// fingerprint is a rule's expressions in their netlink encoding, without
// what the kernel changes on its own or reports differently: counters'
// values and the numeric IDs of the sets lookups name.
func fingerprint(es []expr.Any) string {
	var b []byte
	for _, e := range es {
		switch x := e.(type) {
		case *expr.Counter:
			continue
		case *expr.Lookup:
			c := *x
			c.SetID, c.SourceRegister, c.DestRegister = 0, dumpReg(c.SourceRegister), dumpReg(c.DestRegister)
			e = &c
		case *expr.Meta:
			c := *x
			c.Register = dumpReg(c.Register)
			e = &c
		case *expr.Payload:
			c := *x
			c.DestRegister, c.SourceRegister = dumpReg(c.DestRegister), dumpReg(c.SourceRegister)
			e = &c
		case *expr.Cmp:
			c := *x
			c.Register = dumpReg(c.Register)
			e = &c
		case *expr.Ct:
			// google/nftables v0.3.0 reads a ct set's source register back
			// as none; the immediate before it carries the value.
			c := *x
			if c.SourceRegister {
				c.Register, c.SourceRegister = 0, false
			}
			e = &c
		}
		enc, err := expr.Marshal(0, e)
		if err != nil {
			return "unencodable"
		}
		b = append(b, enc...)
	}
	return string(b)
}

// anyKey stands for a key type a read-back could not tell.
var anyKey = nftables.SetDatatype{Name: "(unknown)"}

func sameSetType(a, b *Set) bool {
	keys := a.KeyType.Name == b.KeyType.Name || a.KeyType.Name == anyKey.Name || b.KeyType.Name == anyKey.Name
	return keys && a.Map == b.Map && a.Interval == b.Interval && a.Concat == b.Concat &&
		(!a.Map || a.DataType.Name == b.DataType.Name)
}

// dumpReg is a register number as the kernel reports it: a 32-bit
// register (8-23) that starts a 128-bit one (1-4) is reported as that one.
func dumpReg(r uint32) uint32 {
	if r >= 8 && r <= 23 && (r-8)%4 == 0 {
		return 1 + (r-8)/4
	}
	return r
}
