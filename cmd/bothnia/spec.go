package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/bothnia/bothnia/lab"
	"github.com/bothnia/bothnia/plan"
	"github.com/bothnia/bothnia/spec"
)

func validateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "validate SPEC",
		Short: "Check a fabric spec and list every problem in it",
		Long: `Validate reads a fabric spec and reports every problem at once, each with
the field it is in and what to do, e.g.

  spec: sites.knox.pools[0]: 10.101.0.5-10.101.0.9 lies outside knox's half 10.101.128.0/17

It checks addresses and CIDRs, that pools stay in their site's half and do
not overlap, that VMs sit in their node's half, that no address is used
twice or collides with the router, DHCP or DNS, and that every node, site
and network a field names exists. Exit status 1 on any problem.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := spec.Load(args[0])
			if err != nil {
				return err
			}
			n := 0
			for _, nw := range s.Networks {
				n += len(nw.VMs)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: valid: fabric %s, %d sites, %d networks, %d VMs\n",
				args[0], s.Fabric.Name, len(s.Sites), len(s.Networks), n)
			return nil
		},
	}
}

func planCmd() *cobra.Command {
	var node, output string
	var labMode bool
	c := &cobra.Command{
		Use:   "plan SPEC",
		Short: "Print the desired state of every node (or one) without touching anything",
		Long: `Plan compiles the spec into each node's desired state: namespaces, bridges
(with their fixed MACs), the inter-site uplink, VM ports, router and DHCP
legs, routes and SNAT. It reads nothing from the machine and needs no root.

With --lab it shows the plan as the lab builds it, every segment carried as
VXLAN over the lab's underlay instead of a VLAN on the spec's device.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := spec.Load(args[0])
			if err != nil {
				return err
			}
			if labMode {
				if s, err = lab.LabSpec(s); err != nil {
					return err
				}
			}
			p, err := plan.Compile(s)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if node == "" {
				return emit(out, output, p, func() error { _, err := fmt.Fprint(out, p.String()); return err })
			}
			n := p.Node(node)
			if n == nil {
				return fmt.Errorf("plan: no node %q in %s", node, args[0])
			}
			return emit(out, output, n, func() error { _, err := fmt.Fprint(out, n.String()); return err })
		},
	}
	outputFlag(c, &output)
	c.Flags().StringVar(&node, "node", "", "print only this node")
	c.Flags().BoolVar(&labMode, "lab", false, "plan as the lab builds it (VXLAN uplinks)")
	return c
}
