package main

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bothnia/bothnia/lab"
	"github.com/bothnia/bothnia/trace"
)

func traceCmd() *cobra.Command {
	var r trace.Request
	var specPath, name, output string
	var kernel bool
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

It reads SPEC, or without --spec the running lab's spec. With --kernel, in
the running lab, the packet is also sent for real from the VM, with
nftables tracing on in every node and router, and the kernel's path is
printed after the model's, with the nodes it passed and where it was
dropped. trace fails if the kernel's verdict differs from the model's, or
if its path does: a packet the model drops must be dropped on the node of
the stage that drops it (the source's for anti-spoofing and egress, the
destination's for ingress) in a chain of that stage, or reach the router
and go no further for want of a route; one it delivers must pass the
source's node and the destination's (or the router) with no rule dropping
it. A forged address goes as a raw IPv4 packet, a forged
MAC as a raw Ethernet frame from the VM's eth0.`,
		Example: `  bothnia trace epouta-vm1 knox-vm1 --proto tcp --port 7000
  bothnia trace knox-vm1 uu-dns -o json
  bothnia trace knox-vm2 knox-vm1 --src-ip 10.101.128.99
  bothnia trace knox-vm2 knox-vm1 --proto tcp --port 7000 --src-mac fa:16:3e:00:00:99 --kernel`,
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
			if kernel {
				l, err := lab.New(name)
				if err != nil {
					return err
				}
				if t.Kernel, err = l.TraceKernel(s, t, r); err != nil {
					return err
				}
			}
			switch output {
			case "json":
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(t); err != nil {
					return err
				}
			case "table", "":
				fmt.Fprint(cmd.OutOrStdout(), t.String())
				if t.Kernel != nil {
					fmt.Fprintf(cmd.OutOrStdout(), "\nthe kernel (nft monitor trace), sent for real:\n  %s\n", strings.Join(t.Kernel.Lines, "\n  "))
					for i, h := range t.Kernel.Hops {
						fmt.Fprintf(cmd.OutOrStdout(), "%2d. %s\n", i+1, h)
					}
					fmt.Fprintf(cmd.OutOrStdout(), "kernel verdict: %s\n", t.Kernel.Verdict)
					for _, d := range t.Kernel.Disagreements {
						fmt.Fprintf(cmd.OutOrStdout(), "disagrees: %s\n", d)
					}
				}
			default:
				return fmt.Errorf("trace: -o %q is not a format; use table or json", output)
			}
			if t.Kernel != nil && t.Kernel.Verdict != t.Verdict {
				return fmt.Errorf("trace: the kernel disagrees with the model: the model says %s, the kernel %s", t.Verdict, t.Kernel.Verdict)
			}
			if t.Kernel != nil && len(t.Kernel.Disagreements) > 0 {
				return fmt.Errorf("trace: the kernel's path disagrees with the model's: %s", strings.Join(t.Kernel.Disagreements, "; "))
			}
			return nil
		},
	}
	c.Flags().StringVar(&specPath, "spec", "", "the fabric spec (default: the running lab's)")
	c.Flags().StringVar(&r.Proto, "proto", "icmp", "tcp, udp or icmp")
	c.Flags().IntVar(&r.Port, "port", 0, "destination port (tcp, udp)")
	c.Flags().StringVar(&r.SrcIP, "src-ip", "", "forge the source address")
	c.Flags().StringVar(&r.SrcMAC, "src-mac", "", "forge the source MAC")
	c.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	c.Flags().BoolVar(&kernel, "kernel", false, "also send the packet for real in the running lab, with nftables tracing on, and print the kernel's path; a different verdict or path is an error")
	labFlag(c, &name)
	return c
}
