package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/bothnia/bothnia/dataplane"
	bnode "github.com/bothnia/bothnia/node"
	"github.com/bothnia/bothnia/spec"
)

func applyCmd() *cobra.Command {
	var node, prefix string
	var dry, noFirewall bool
	c := &cobra.Command{
		Use:   "apply SPEC --node NODE",
		Short: "Apply one node's plan to this host (real hosts; changes the root namespace)",
		Long: `Apply makes this host match its node's plan: it creates what is missing,
fixes what differs and removes what bothnia made that the plan no longer has.
It never flushes: what is already right is left alone, and objects bothnia
did not make (links without the ifalias "bothnia", routes of other
protocols, other nftables tables) are never changed. Running it twice
changes nothing the second time. It then programs the node's security
groups with the spec's renderer (--no-firewall to skip).

This acts on the root network namespace of the machine it runs on. For a
test on one machine use "bothnia lab up" instead.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := spec.Load(args[0])
			if err != nil {
				return err
			}
			fab, err := bnode.Desired(s)
			if err != nil {
				return err
			}
			st, err := fab.Node(node)
			if err != nil {
				return fmt.Errorf("apply: %w; pass --node with one of them", err)
			}
			if dry {
				fmt.Fprint(cmd.OutOrStdout(), st.Plan.String())
				return nil
			}
			c := &bnode.Converger{Target: dataplane.Target{Prefix: prefix}, NoFirewall: noFirewall}
			defer c.Close()
			res, err := c.Converge(st)
			for _, ch := range res.Changes {
				fmt.Fprintln(cmd.OutOrStdout(), ch)
			}
			for _, p := range res.Pending {
				fmt.Fprintln(cmd.OutOrStdout(), "pending port:", p)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d changes\n", len(res.Changes))
			return err
		},
	}
	c.Flags().StringVar(&node, "node", "", "the spec's name for this host (required)")
	c.Flags().StringVar(&prefix, "ns-prefix", "bn-", "prefix of the router/DHCP namespaces bothnia owns")
	c.Flags().BoolVar(&dry, "dry-run", false, "print the node's plan instead of applying it")
	c.Flags().BoolVar(&noFirewall, "no-firewall", false, "leave the security groups alone (links, routes and NAT only)")
	_ = c.MarkFlagRequired("node")
	return c
}
