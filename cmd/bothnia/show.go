package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/bothnia/bothnia/firewall"
	"github.com/bothnia/bothnia/lab"
)

func showCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "show",
		Short: "Show what bothnia would program, without touching anything",
	}
	c.AddCommand(showFirewallCmd(), showCountersCmd(), showTopologyCmd())
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
			path := ""
			if len(args) == 1 {
				path = args[0]
			}
			s, err := loadSpec(path, name)
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

func showCountersCmd() *cobra.Command {
	var node, name, output string
	var host bool
	c := &cobra.Command{
		Use:   "counters (--node NODE | --host)",
		Short: "What the firewall has dropped on a node, by reason (nftables renderer)",
		Long: `Reads the node's drop counters from the kernel, by reason: spoofed-source
(an address or MAC outside the port's pairs), spoofed-arp, rogue-dhcp (a VM
answering as a DHCP or DHCPv6 server), rogue-ra (a router advertisement from
a VM), tagged-frame (802.1Q/802.1ad from or into a VM), invalid (conntrack
INVALID) and group-deny (no security group rule allowed it). --node reads a
node of the running lab; --host reads this host (a real node). The agent
exports the same as bothnia_firewall_drops_total{reason}.`,
		Example: "  bothnia show counters --node knox-c1\n  bothnia show counters --host -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ns := ""
			if !host {
				if node == "" {
					return fmt.Errorf("show counters: pass --node NODE (a lab node) or --host (this host)")
				}
				l, err := lab.New(name)
				if err != nil {
					return err
				}
				ns = l.NodeNS(node)
			}
			drops, err := firewall.ReadDrops(ns)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			return emit(out, output, drops, func() error {
				fmt.Fprintf(out, "%-15s %12s %14s\n", "reason", "packets", "bytes")
				for _, r := range firewall.DropReasons {
					fmt.Fprintf(out, "%-15s %12d %14d\n", r, drops[r].Packets, drops[r].Bytes)
				}
				return nil
			})
		},
	}
	c.Flags().StringVar(&node, "node", "", "a node of the running lab")
	c.Flags().BoolVar(&host, "host", false, "this host's own firewall")
	outputFlag(c, &output)
	labFlag(c, &name)
	return c
}
