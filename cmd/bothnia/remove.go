package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/bothnia/bothnia/dataplane"
	bnode "github.com/bothnia/bothnia/node"
)

func removeCmd() *cobra.Command {
	var prefix, out string
	c := &cobra.Command{
		Use:   "remove",
		Short: "Take everything bothnia made off this host (switching it back to Neutron)",
		Long: `Remove deletes what bothnia made on this host and nothing else: its
bridges and uplinks (links with the ifalias "bothnia"), its router and DHCP
namespaces (--ns-prefix), its routes and NAT, its nftables tables, the
iptables layout's chains, and its rules in Neutron's neutron-filter-top.
Links go first, so a VM's tap is out of bothnia's bridge before its rules
are. VM taps stay, in no bridge, for Neutron's linuxbridge agent to plug.

Stop the agent first ("systemctl stop bothnia-agent"): a running agent
would build it all again. Running remove twice changes nothing the second
time. docs/openstack.md ("Back") has the whole procedure.

This acts on the root network namespace of the machine it runs on.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			changes, err := bnode.Remove(dataplane.Target{Prefix: prefix})
			if changes == nil {
				changes = []string{}
			}
			if e := emit(cmd.OutOrStdout(), out, map[string]any{"changes": changes}, func() error {
				for _, ch := range changes {
					fmt.Fprintln(cmd.OutOrStdout(), ch)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%d changes\n", len(changes))
				return nil
			}); e != nil {
				return e
			}
			return err
		},
	}
	c.Flags().StringVar(&prefix, "ns-prefix", "bn-", "prefix of the router/DHCP namespaces bothnia owns")
	outputFlag(c, &out)
	return c
}
