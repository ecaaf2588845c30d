package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/bothnia/bothnia/check"
	"github.com/bothnia/bothnia/plan"
	"github.com/bothnia/bothnia/topology"
)

func showTopologyCmd() *cobra.Command {
	var name, output, results string
	c := &cobra.Command{
		Use:   "topology [SPEC]",
		Short: "Draw the sites, nodes, link, networks, VMs, router and allowlist (dot or SVG)",
		Long: `Show topology draws the fabric: each site (dashed when foreign) with its
nodes and their VMs, DHCP and DNS servers, the inter-site link, every
network with its VLAN or VNI and bridge, joined to the nodes whose plan
carries it, and the router with the endpoints of its allowlist.

With --results FILE (the output of "bothnia check -o json") the VMs a
failed probe came from or went to are filled red, the failures in their
tooltip. -o dot prints Graphviz's source; -o svg renders it with dot
(Debian package graphviz). Without SPEC it draws the running lab.`,
		Example: "  bothnia show topology examples/knox-epouta.yaml -o svg > fabric.svg\n" +
			"  bothnia check -o json > check.json; bothnia show topology --results check.json -o svg > fabric.svg",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := ""
			if len(args) == 1 {
				path = args[0]
			}
			s, err := loadSpec(path, name)
			if err != nil {
				return err
			}
			p, err := plan.Compile(s)
			if err != nil {
				return err
			}
			broken := topology.Broken{}
			if results != "" {
				if broken, err = readBroken(results); err != nil {
					return err
				}
			}
			dot := topology.Dot(s, p, broken)
			switch output {
			case "dot":
				_, err = fmt.Fprint(cmd.OutOrStdout(), dot)
				return err
			case "svg":
				svg, err := topology.SVG(dot)
				if err != nil {
					return err
				}
				_, err = cmd.OutOrStdout().Write(svg)
				return err
			}
			return fmt.Errorf("show topology: -o %q is not a format; use dot or svg", output)
		},
	}
	labFlag(c, &name)
	c.Flags().StringVarP(&output, "output", "o", "dot", "dot or svg")
	c.Flags().StringVar(&results, "results", "", "check's JSON results (bothnia check -o json) whose failures to mark")
	return c
}

// readBroken collects, by VM, the failed probes of check's JSON output.
func readBroken(path string) (topology.Broken, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var view struct {
		Probes []check.Result `json:"probes"`
	}
	if err := json.Unmarshal(b, &view); err != nil {
		return nil, fmt.Errorf("show topology: %s is not check's JSON output (bothnia check -o json): %w", path, err)
	}
	out := topology.Broken{}
	for _, r := range view.Probes {
		if r.OK() {
			continue
		}
		line := fmt.Sprintf("%s %s -> %s: want %t, got %t %s", r.Kind, r.From, r.To.Name, r.Want, r.Got, r.Err)
		out[r.From] = append(out[r.From], line)
		if r.To.VM {
			out[r.To.Name] = append(out[r.To.Name], line)
		}
	}
	return out, nil
}
