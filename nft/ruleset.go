// Package nft holds a desired nftables ruleset as plain data, each rule
// with its canonical text, and (on Linux) applies it as a diff: only the
// chains, set elements and map elements that differ are written, in one
// netlink transaction, and never a table flush.
package nft

import (
	"fmt"
	"sort"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// Ruleset is the desired content of the tables bothnia owns.
type Ruleset struct {
	Tables []*Table
}

// Table is one owned table.
type Table struct {
	Family nftables.TableFamily
	Name   string
	Sets   []*Set   // sets and maps, declared before the chains that use them
	Chains []*Chain // base chains and regular chains
}

// Hook makes a chain a base chain.
type Hook struct {
	Type     nftables.ChainType
	Hooknum  nftables.ChainHook
	Priority int32
}

// Chain is a chain and its rules in order.
type Chain struct {
	Name  string
	Hook  *Hook
	Rules []Rule
}

// Rule is one rule: its canonical text (also stored as the rule's comment,
// which is how a read-back is compared) and the expressions that do it.
type Rule struct {
	Text  string
	Exprs []expr.Any
}

// Set is a named set or map.
type Set struct {
	Name     string
	KeyType  nftables.SetDatatype
	DataType nftables.SetDatatype // maps only
	Map      bool
	Interval bool
	// Concat marks a concatenated key (ifname . ether_addr . ipv4_addr);
	// with Interval its elements carry an inclusive KeyEnd.
	Concat bool
	Elems  []Elem
}

// Elem is a set or map element. Text identifies it in diffs.
type Elem struct {
	Text    string
	Key     []byte
	KeyEnd  []byte // interval sets: first address after the range
	Val     []byte
	Verdict *expr.Verdict
}

// Table returns the named table, or nil.
func (r *Ruleset) Table(name string) *Table {
	for _, t := range r.Tables {
		if t.Name == name {
			return t
		}
	}
	return nil
}

// Chain returns the named chain, or nil.
func (t *Table) Chain(name string) *Chain {
	for _, c := range t.Chains {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// Set returns the named set, or nil.
func (t *Table) Set(name string) *Set {
	for _, s := range t.Sets {
		if s.Name == name {
			return s
		}
	}
	return nil
}

var families = map[nftables.TableFamily]string{
	nftables.TableFamilyINet: "inet", nftables.TableFamilyBridge: "bridge",
	nftables.TableFamilyIPv4: "ip", nftables.TableFamilyIPv6: "ip6",
}

var hooks = map[nftables.ChainHook]string{
	*nftables.ChainHookPrerouting: "prerouting", *nftables.ChainHookInput: "input",
	*nftables.ChainHookForward: "forward", *nftables.ChainHookOutput: "output",
	*nftables.ChainHookPostrouting: "postrouting",
}

// String renders the ruleset much as `nft list ruleset` would, for humans
// and golden files. Elements are sorted; rules keep their order.
func (r *Ruleset) String() string {
	var b strings.Builder
	for _, t := range r.Tables {
		fmt.Fprintf(&b, "table %s %s {\n", families[t.Family], t.Name)
		for _, s := range t.Sets {
			kind, typ := "set", s.KeyType.Name
			if s.Map {
				kind, typ = "map", s.KeyType.Name+" : "+s.DataType.Name
			}
			fmt.Fprintf(&b, "\t%s %s {\n\t\ttype %s\n", kind, s.Name, typ)
			if s.Interval {
				b.WriteString("\t\tflags interval\n")
			}
			if len(s.Elems) > 0 {
				var es []string
				for _, e := range s.Elems {
					es = append(es, e.Text)
				}
				sort.Strings(es)
				fmt.Fprintf(&b, "\t\telements = { %s }\n", strings.Join(es, ",\n\t\t\t     "))
			}
			b.WriteString("\t}\n")
		}
		for _, c := range t.Chains {
			fmt.Fprintf(&b, "\tchain %s {\n", c.Name)
			if c.Hook != nil {
				fmt.Fprintf(&b, "\t\ttype %s hook %s priority %d; policy accept;\n", c.Hook.Type, hooks[c.Hook.Hooknum], c.Hook.Priority)
			}
			for _, r := range c.Rules {
				fmt.Fprintf(&b, "\t\t%s\n", r.Text)
			}
			b.WriteString("\t}\n")
		}
		b.WriteString("}\n")
	}
	return b.String()
}

// RuleCount is the number of rules in the ruleset.
func (r *Ruleset) RuleCount() int {
	n := 0
	for _, t := range r.Tables {
		for _, c := range t.Chains {
			n += len(c.Rules)
		}
	}
	return n
}

// View is a ruleset as plain data for JSON and YAML output: rule and
// element texts, without the expressions behind them.
type View struct {
	Tables []TableView `json:"tables" yaml:"tables"`
}

// TableView is one table of a View.
type TableView struct {
	Family string      `json:"family" yaml:"family"`
	Name   string      `json:"name" yaml:"name"`
	Sets   []SetView   `json:"sets" yaml:"sets"`
	Chains []ChainView `json:"chains" yaml:"chains"`
}

// SetView is one set or map of a View.
type SetView struct {
	Name     string   `json:"name" yaml:"name"`
	Type     string   `json:"type" yaml:"type"`
	Map      bool     `json:"map,omitempty" yaml:"map,omitempty"`
	Elements []string `json:"elements" yaml:"elements"`
}

// ChainView is one chain of a View.
type ChainView struct {
	Name     string   `json:"name" yaml:"name"`
	Hook     string   `json:"hook,omitempty" yaml:"hook,omitempty"`
	Priority int32    `json:"priority,omitempty" yaml:"priority,omitempty"`
	Rules    []string `json:"rules" yaml:"rules"`
}

// View returns the ruleset as plain data.
func (r *Ruleset) View() View {
	var v View
	for _, t := range r.Tables {
		tv := TableView{Family: families[t.Family], Name: t.Name, Sets: []SetView{}, Chains: []ChainView{}}
		for _, s := range t.Sets {
			sv := SetView{Name: s.Name, Type: s.KeyType.Name, Map: s.Map, Elements: []string{}}
			if s.Map {
				sv.Type += " : " + s.DataType.Name
			}
			for _, e := range s.Elems {
				sv.Elements = append(sv.Elements, e.Text)
			}
			sort.Strings(sv.Elements)
			tv.Sets = append(tv.Sets, sv)
		}
		for _, c := range t.Chains {
			cv := ChainView{Name: c.Name, Rules: []string{}}
			if c.Hook != nil {
				cv.Hook, cv.Priority = hooks[c.Hook.Hooknum], c.Hook.Priority
			}
			for _, rl := range c.Rules {
				cv.Rules = append(cv.Rules, rl.Text)
			}
			tv.Chains = append(tv.Chains, cv)
		}
		v.Tables = append(v.Tables, tv)
	}
	return v
}
