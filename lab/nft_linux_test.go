package lab

import (
	"github.com/google/nftables"

	"github.com/bothnia/bothnia/dataplane"
)

// deleteNAT removes the router's NAT table behind bothnia's back; it runs
// inside the router's namespace.
func deleteNAT() error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	c.DelTable(&nftables.Table{Name: dataplane.NATTable, Family: nftables.TableFamilyIPv4})
	return c.Flush()
}
