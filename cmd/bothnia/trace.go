package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/bothnia/bothnia/trace"
)

func traceCmd() *cobra.Command {
	var r trace.Request
	var specPath, name, output string
	c := &cobra.Command{
		Use:   "trace FROM TO",
		Short: "Explain, stage by stage, what the fabric does with one packet (like ovn-trace)",
		Long: `Trace walks one packet through the model the agents program and prints each
stage with the object that decided it: the source port's anti-spoofing, its
egress security groups and the rule that matched, the bridge and the uplink
(VXLAN VNI or VLAN tag) to the node of the destination, the destination's
ingress groups and rule, or the router, its allowlist route and SNAT; then
the verdict. FROM is a VM; TO is a VM, an allowlisted endpoint's name, or
an address. --src-ip and --src-mac try a forged packet.

It reads SPEC, or without --spec the running lab's spec.`,
		Example: `  bothnia trace epouta-vm1 knox-vm1 --proto tcp --port 7000
  bothnia trace knox-vm1 uu-dns -o json
  bothnia trace knox-vm2 knox-vm1 --src-ip 10.101.128.99`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := loadSpec(specPath, name)
			if err != nil {
				return err
			}
			r.From, r.To = args[0], args[1]
			t, err := trace.Run(s, r)
			if err != nil {
				return err
			}
			switch output {
			case "json":
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(t)
			case "table", "":
				fmt.Fprint(cmd.OutOrStdout(), t.String())
				return nil
			default:
				return fmt.Errorf("trace: -o %q is not a format; use table or json", output)
			}
		},
	}
	c.Flags().StringVar(&specPath, "spec", "", "the fabric spec (default: the running lab's)")
	c.Flags().StringVar(&r.Proto, "proto", "icmp", "tcp, udp or icmp")
	c.Flags().IntVar(&r.Port, "port", 0, "destination port (tcp, udp)")
	c.Flags().StringVar(&r.SrcIP, "src-ip", "", "forge the source address")
	c.Flags().StringVar(&r.SrcMAC, "src-mac", "", "forge the source MAC")
	c.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	labFlag(c, &name)
	return c
}
