package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/bothnia/bothnia/firewall"
	"github.com/bothnia/bothnia/lab"
	"github.com/bothnia/bothnia/spec"
)

func showCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "show",
		Short: "Show what bothnia would program, without touching anything",
	}
	c.AddCommand(showFirewallCmd())
	return c
}

func showFirewallCmd() *cobra.Command {
	var node, renderer, name, output string
	c := &cobra.Command{
		Use:   "firewall [SPEC] --node NODE",
		Short: "Print a node's security groups as nftables and as iptables rules",
		Long: `Show firewall compiles the spec's security groups for one node and prints
both renderings of the same model: the nftables ruleset (bridge-family
anti-spoofing and port marks, inet-family zones and stateful groups, with
O(1) per-port dispatch through maps) and the iptables layout Neutron's
linuxbridge agent uses (physdev chains, ipset, ebtables).

Without SPEC it uses the running lab's spec.`,
		Example: "  bothnia show firewall examples/knox-epouta.yaml --node knox-c1 --renderer nftables",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var s *spec.Spec
			var err error
			if len(args) == 1 {
				s, err = spec.Load(args[0])
			} else {
				var l *lab.Lab
				if l, err = lab.New(name); err == nil {
					s, err = l.Spec()
				}
			}
			if err != nil {
				return err
			}
			if renderer != "" && renderer != "nftables" && renderer != "iptables" {
				return fmt.Errorf("show firewall: --renderer %q is not a renderer; use nftables or iptables (or leave it out for both)", renderer)
			}
			if s.NodeSite(node) == "" {
				return fmt.Errorf("show firewall: no node %q; pass --node with one of the spec's nodes", node)
			}
			f, err := firewall.Compile(s)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			view := map[string]any{"node": node}
			if renderer == "" || renderer == "nftables" {
				view["nftables"] = firewall.RenderNFT(f, node).View()
			}
			if renderer == "" || renderer == "iptables" {
				view["iptables"] = firewall.RenderIPTables(f, node)
			}
			return emit(out, output, view, func() error {
				if renderer == "" || renderer == "nftables" {
					fmt.Fprintf(out, "# nftables, node %s\n%s", node, firewall.RenderNFT(f, node))
				}
				if renderer == "" || renderer == "iptables" {
					fmt.Fprintf(out, "# iptables (iptables-restore, ipset, ebtables-restore), node %s\n%s", node, firewall.RenderIPTables(f, node))
				}
				return nil
			})
		},
	}
	c.Flags().StringVar(&node, "node", "", "the node to show (required)")
	c.Flags().StringVar(&renderer, "renderer", "", "nftables or iptables (default: both)")
	outputFlag(c, &output)
	labFlag(c, &name)
	_ = c.MarkFlagRequired("node")
	return c
}
