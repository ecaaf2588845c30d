package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/bothnia/bothnia/dataplane"
	"github.com/bothnia/bothnia/firewall"
	"github.com/bothnia/bothnia/plan"
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
			p, err := plan.Compile(s)
			if err != nil {
				return err
			}
			n := p.Node(node)
			if n == nil {
				return fmt.Errorf("apply: no node %q in %s; pass --node with one of the spec's nodes", node, args[0])
			}
			if dry {
				fmt.Fprint(cmd.OutOrStdout(), n.String())
				return nil
			}
			res, err := dataplane.Apply(n, dataplane.Target{Prefix: prefix})
			changes := res.Changes
			if err == nil && !noFirewall {
				var f *firewall.Fabric
				if f, err = firewall.Compile(s); err == nil {
					var fc []string
					fc, err = firewall.Program(s.Firewall, "", f, node)
					changes = append(changes, fc...)
				}
			}
			for _, ch := range changes {
				fmt.Fprintln(cmd.OutOrStdout(), ch)
			}
			for _, p := range res.Pending {
				fmt.Fprintln(cmd.OutOrStdout(), "pending port:", p)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d changes\n", len(changes))
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
