package dataplane

import (
	"fmt"
	"net"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/bothnia/bothnia/plan"
)

// NATTable is the nftables table that holds a router's SNAT. bothnia owns it
// whole, so no other tool's rules are ever read or changed.
const NATTable = "bothnia-nat"

// snatComment identifies a rule by what it does; the diff compares these,
// so a rule is rewritten only when its meaning changes.
func snatComment(s plan.SNAT) string { return fmt.Sprintf("snat oif %s to %s", s.OutIface, s.To) }

func snatExprs(s plan.SNAT) []expr.Any {
	name := make([]byte, unix.IFNAMSIZ)
	copy(name, s.OutIface)
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: name},
		&expr.Immediate{Register: 1, Data: net.ParseIP(s.To).To4()},
		&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1},
	}
}

// snat makes the namespace's NAT table hold exactly the planned SNAT rules,
// in one nftables transaction. A namespace without SNAT has no table.
func (a *applier) snat(ns *plan.Namespace) error {
	c, err := nftables.New(nftables.WithNetNSFd(int(a.nss[ns.Name])))
	if err != nil {
		return err
	}
	defer c.CloseLasting()
	table := &nftables.Table{Name: NATTable, Family: nftables.TableFamilyIPv4}
	existing, err := c.ListTableOfFamily(NATTable, nftables.TableFamilyIPv4)
	haveTable := err == nil && existing != nil
	if len(ns.SNAT) == 0 {
		if haveTable {
			c.DelTable(table)
			if err := c.Flush(); err != nil {
				return err
			}
			a.changef(ns.Name, "nft delete table ip %s", NATTable)
		}
		return nil
	}
	if !haveTable {
		c.AddTable(table)
		a.changef(ns.Name, "nft add table ip %s", NATTable)
	}
	chain := &nftables.Chain{Name: "postrouting", Table: table, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource}
	var rules []*nftables.Rule
	if haveTable {
		if _, err := c.ListChain(table, chain.Name); err == nil {
			if rules, err = c.GetRules(table, chain); err != nil {
				return fmt.Errorf("list rules: %w", err)
			}
		} else {
			c.AddChain(chain)
			a.changef(ns.Name, "nft add chain ip %s postrouting", NATTable)
		}
	} else {
		c.AddChain(chain)
		a.changef(ns.Name, "nft add chain ip %s postrouting", NATTable)
	}
	want := map[string]plan.SNAT{}
	for _, s := range ns.SNAT {
		want[snatComment(s)] = s
	}
	have := map[string]bool{}
	for _, r := range rules {
		comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
		if _, ok := want[comment]; ok && !have[comment] {
			have[comment] = true
			continue
		}
		if err := c.DelRule(r); err != nil {
			return err
		}
		a.changef(ns.Name, "nft delete rule ip %s postrouting (%s)", NATTable, comment)
	}
	for _, s := range ns.SNAT {
		k := snatComment(s)
		if have[k] {
			continue
		}
		c.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: snatExprs(s),
			UserData: userdata.AppendString(nil, userdata.TypeComment, k)})
		a.changef(ns.Name, "nft add rule ip %s postrouting %s", NATTable, k)
	}
	return c.Flush()
}
