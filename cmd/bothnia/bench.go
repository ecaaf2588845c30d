package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bothnia/bothnia/bench"
)

func benchCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "bench",
		Short: "Measure bothnia against its baselines on this machine (root, namespaces only)",
	}
	var sizes string
	var repeat int
	var noIPT bool
	fw := &cobra.Command{
		Use:   "firewall",
		Short: "Time initial programming and one-port changes: nftables vs iptables diff vs full iptables-restore",
		Long: `Builds a node with N secured ports in a namespace of its own for each size,
and prints in one run: the initial programming with each renderer, and the
time to add one port with nftables (incremental, one transaction),
iptables-restore --noflush of the changed chains, and a full
iptables-restore of the Neutron layout; then the ratios. Each one-port time
is the median of --repeat runs. Large sizes with iptables take minutes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var ns []int
			for _, s := range strings.Split(sizes, ",") {
				n, err := strconv.Atoi(strings.TrimSpace(s))
				if err != nil || n < 1 {
					return fmt.Errorf("bench: --sizes: %q is not a positive number", s)
				}
				ns = append(ns, n)
			}
			return bench.Firewall(cmd.OutOrStdout(), "bnbench", ns, repeat, !noIPT)
		},
	}
	fw.Flags().StringVar(&sizes, "sizes", "100,1000,3000,10000", "comma-separated port counts")
	fw.Flags().IntVar(&repeat, "repeat", 5, "one-port changes per size (median printed)")
	fw.Flags().BoolVar(&noIPT, "no-iptables", false, "measure nftables only")
	c.AddCommand(fw)
	return c
}
