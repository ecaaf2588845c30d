// Command bothnia builds one private L2 network across two clouds from a
// declarative fabric spec. This file is wiring only: flags and output.
package main

import (
	"fmt"
	"os"
	"runtime/debug"
	"runtime/pprof"

	"github.com/spf13/cobra"
)

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "bothnia:", err)
		os.Exit(1)
	}
}

// newRoot builds the command tree.
func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "bothnia",
		Short: "One private L2 network across two clouds, from one fabric spec",
		Long: `bothnia joins VMs of two clouds (a linuxbridge OpenStack "Knox" and CSC's
"ePouta") on one private L2 network over a dedicated inter-site link.

The fabric spec (YAML) is the single source of truth: the address plan and
its split between sites, the nodes, the inter-site link, the virtual router
and its allowlist, DHCP/DNS and every network's VMs. See
examples/knox-epouta.yaml.

Start here:
  bothnia validate examples/knox-epouta.yaml   # check a spec
  bothnia plan examples/knox-epouta.yaml       # what every node will hold
  bothnia lab up examples/knox-epouta.yaml     # build both sites on this machine
  bothnia check                                # prove reachability and isolation
  bothnia lab down                             # remove the lab`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(validateCmd(), routerCmd(), planCmd(), labCmd(), checkCmd(), applyCmd(), showCmd(), benchCmd(), dhcpCmd(), dnsCmd(),
		etcdCmd(), pushCmd(), getCmd(), agentCmd(), traceCmd(), openstackCmd(), removeCmd())
	var cpuProfile string
	var profFile *os.File
	root.PersistentFlags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the command to this file (for go tool pprof)")
	_ = root.PersistentFlags().MarkHidden("cpuprofile")
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		if cpuProfile == "" {
			return nil
		}
		var err error
		if profFile, err = os.Create(cpuProfile); err != nil {
			return err
		}
		return pprof.StartCPUProfile(profFile)
	}
	root.PersistentPostRun = func(*cobra.Command, []string) {
		if profFile != nil {
			pprof.StopCPUProfile()
			profFile.Close()
		}
	}
	completeFlags(root)
	completeArgs(root)
	root.Version = version()
	return root
}

// commit is set at link time (-ldflags "-X main.commit=$(git rev-parse HEAD)")
// where the build does not record version control information.
var commit string

// version is the commit the binary was built from, as go build records it.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	rev, dirty := "unknown (built with -buildvcs=false; go build -buildvcs=true records the commit)", ""
	if commit != "" {
		rev = commit
	}
	for _, st := range bi.Settings {
		switch st.Key {
		case "vcs.revision":
			rev = st.Value
		case "vcs.modified":
			if st.Value == "true" {
				dirty = " (modified)"
			}
		}
	}
	return rev + dirty + " " + bi.GoVersion
}
