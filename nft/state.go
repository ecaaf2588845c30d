package nft

import (
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
	id := hex.EncodeToString(e.Key)
	if e.KeyEnd != nil {
		id += "-" + hex.EncodeToString(e.KeyEnd)
	}
	return id
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

func sameRules(a, b []Rule) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Text != b[i].Text {
			return false
		}
	}
	return true
}

// anyKey stands for a key type a read-back could not tell.
var anyKey = nftables.SetDatatype{Name: "(unknown)"}

func sameSetType(a, b *Set) bool {
	keys := a.KeyType.Name == b.KeyType.Name || a.KeyType.Name == anyKey.Name || b.KeyType.Name == anyKey.Name
	return keys && a.Map == b.Map && a.Interval == b.Interval && a.Concat == b.Concat &&
		(!a.Map || a.DataType.Name == b.DataType.Name)
}
