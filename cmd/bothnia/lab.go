package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bothnia/bothnia/check"
	"github.com/bothnia/bothnia/lab"
	"github.com/bothnia/bothnia/spec"
)

const defaultLab = "bn"

func labFlag(c *cobra.Command, name *string) {
	c.Flags().StringVar(name, "name", defaultLab, "lab name: the prefix of every namespace the lab makes")
}

// openLab names the lab and loads the spec from the argument, or the one
// the lab was built from.
func openLab(name string, args []string) (*lab.Lab, *spec.Spec, []byte, error) {
	l, err := lab.New(name)
	if err != nil {
		return nil, nil, nil, err
	}
	if len(args) == 0 {
		s, err := l.Spec()
		return l, s, nil, err
	}
	b, err := os.ReadFile(args[0])
	if err != nil {
		return nil, nil, nil, err
	}
	s, err := spec.Parse(b)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w", args[0], err)
	}
	return l, s, b, nil
}

// loadSpec reads the spec at path, or without one the running lab's.
func loadSpec(path, labName string) (*spec.Spec, error) {
	if path != "" {
		return spec.Load(path)
	}
	l, err := lab.New(labName)
	if err != nil {
		return nil, err
	}
	return l.Spec()
}

func labCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "lab",
		Short: "Build, inspect and remove a two-site lab in network namespaces",
		Long: `The lab builds a whole fabric on this machine, as root, without touching the
root network namespace: every node, VM, site switch and the outside world is
a namespace named <name>-…. The inter-site link is a veth pair shaped to the
spec's rate, carrying each network as VXLAN (this kernel lacks 802.1Q). The
node plans are applied by the same code that runs on real hosts.`,
	}
	c.AddCommand(labUpCmd(), labDownCmd(), labStatusCmd(), labExecCmd(), labVMCmd(), labNodeCmd())
	return c
}

func labUpCmd() *cobra.Command {
	var name string
	var verbose, direct bool
	var foreign string
	var members int
	c := &cobra.Command{
		Use:   "up [SPEC]",
		Short: "Build the lab, or bring a running one in line with SPEC (idempotent)",
		Long: `Builds both sites of SPEC in namespaces, or brings a running lab in line
with it: only what differs is changed, so a second run changes nothing.
Without SPEC it re-applies the spec the running lab was built from (and
repairs whatever drifted).

It runs the control plane as real hosts do: an embedded etcd (serving only
a unix socket in the lab's state directory), the spec pushed into it, and
one "bothnia agent" per node namespace, which converges its node and keeps
it converged. "lab up SPEC2" on a running lab pushes the difference and
waits until every agent has converged to it. --direct converges each node
once from this process instead, with no etcd and no agents.

--etcd-members 3 runs the store as the sites would (deploy/README.md): a
cluster of knox-1, knox-2 and epouta-1, each agent given all three, so
that stopping any one member changes nothing for the fabric.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, s, raw, err := openLab(name, args)
			if err != nil {
				return err
			}
			l.Agents = !direct
			if members != 1 && members != 3 {
				return fmt.Errorf("--etcd-members %d: the lab runs 1 member or the sites' 3", members)
			}
			l.EtcdMembers = members
			l.Foreign = foreign
			rep, err := l.Up(s, raw)
			out := cmd.OutOrStdout()
			if rep != nil {
				if verbose {
					for _, ch := range rep.Changes {
						fmt.Fprintln(out, " ", ch)
					}
				}
				for _, p := range rep.Pending {
					fmt.Fprintln(out, "  pending port:", p)
				}
				if rep.Foreign != "" {
					fmt.Fprintln(out, "  foreign sites:", rep.Foreign)
				}
				if len(rep.Changes) == 0 {
					fmt.Fprintf(out, "lab %s: up to date, nothing changed\n", name)
				} else {
					fmt.Fprintf(out, "lab %s: up, %d changes (-v lists them)\n", name, len(rep.Changes))
				}
			}
			return err
		},
	}
	labFlag(c, &name)
	c.Flags().BoolVarP(&verbose, "verbose", "v", false, "list every change made")
	c.Flags().BoolVar(&direct, "direct", false, "converge the nodes from this process, without etcd and agents")
	c.Flags().StringVar(&foreign, "foreign", "", "how a foreign site runs: neutron (real neutron-server and agents) or stand-in (bothnia imitating them); default: neutron where the packages are installed")
	c.Flags().IntVar(&members, "etcd-members", 1, "etcd members: 1, or the sites' cluster of 3 (set when the lab is first brought up)")
	return c
}

func labDownCmd() *cobra.Command {
	var name string
	c := &cobra.Command{
		Use:   "down",
		Short: "Remove every namespace of the lab, and with them all it made",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := lab.New(name)
			if err != nil {
				return err
			}
			gone, err := l.Down()
			fmt.Fprintf(cmd.OutOrStdout(), "lab %s: removed %d namespaces\n", name, len(gone))
			return err
		},
	}
	labFlag(c, &name)
	return c
}

func labStatusCmd() *cobra.Command {
	var name, output string
	c := &cobra.Command{
		Use:   "status [SPEC]",
		Short: "List the lab's namespaces and whether each is there",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, s, _, err := openLab(name, args)
			if err != nil {
				return err
			}
			lines, all, err := l.Status(s)
			if err != nil {
				return err
			}
			type item struct {
				State string `json:"state" yaml:"state"`
				What  string `json:"what" yaml:"what"`
			}
			var items []item
			for _, ln := range lines {
				st, what, _ := strings.Cut(ln, " ")
				items = append(items, item{st, strings.TrimSpace(what)})
			}
			out := cmd.OutOrStdout()
			if err := emit(out, output, map[string]any{"complete": all, "items": items}, func() error {
				for _, ln := range lines {
					fmt.Fprintln(out, ln)
				}
				return nil
			}); err != nil {
				return err
			}
			if !all {
				return fmt.Errorf("lab %s is incomplete; run bothnia lab up SPEC", name)
			}
			return nil
		},
	}
	labFlag(c, &name)
	outputFlag(c, &output)
	return c
}

func labExecCmd() *cobra.Command {
	var name string
	c := &cobra.Command{
		Use:   "exec VM -- CMD [ARG...]",
		Short: "Run a command inside a lab VM's namespace",
		Example: `  bothnia lab exec knox-vm1 -- ip addr
  bothnia lab exec epouta-vm1 -- ping -c1 10.101.128.10`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := lab.New(name)
			if err != nil {
				return err
			}
			s, err := l.Spec()
			if err != nil {
				return err
			}
			ns, err := l.VMNamespace(s, args[0])
			if err != nil {
				return err
			}
			// As iproute2 runs it: in the VM's namespace, with the VM's
			// resolv.conf (from its DHCP lease) mounted over the host's.
			x := exec.Command("ip", append([]string{"netns", "exec", ns}, args[1:]...)...)
			x.Stdin, x.Stdout, x.Stderr = os.Stdin, os.Stdout, os.Stderr
			if err := x.Start(); err != nil {
				return err
			}
			if err := x.Wait(); err != nil {
				if ee, ok := err.(*exec.ExitError); ok {
					os.Exit(ee.ExitCode())
				}
				return err
			}
			return nil
		},
	}
	labFlag(c, &name)
	return c
}

func checkCmd() *cobra.Command {
	var name, output string
	var full bool
	c := &cobra.Command{
		Use:   "check [SPEC]",
		Short: "Probe the running lab and print expected vs observed reachability",
		Long: `Check derives from the spec what must and must not reach what, sends real
ICMP echoes and TCP connects from every VM, and prints a matrix:

  VM <-> VM of the same network, within and across sites: reachable
  VM <-> VM of another network (another project): blocked
  VM -> each allowlisted endpoint: reachable, and the endpoint sees the
        router's SNAT address
  VM -> an endpoint not on the allowlist: blocked

Pairs of VMs alike in everything that decides a verdict (network, node,
port security, groups, the rule prefixes that hold their address) give the
same answer, so check probes one pair per pair of such classes, by every
protocol and port, and every VM to and from one like it; --full probes
every pair. A probe expected to get through that fails is tried again
before it counts as blocked, and reported slow if the retry gets through.

The kernel's IPv4 neighbour table is one for the whole host (1024 entries
by default, net.ipv4.neigh.default.gc_thresh3), and a full matrix of many
VMs asks for more: when the kernel reports the table full during the run,
the probes that failed are tried again once it has room. Raising that
limit on the host makes --full at a hundred VMs faster; check only reads
it.

Then, for every VM configured by DHCP, that its lease (address, mask,
router, DNS, domain, MTU, server) is the spec's and its own site's server
gave it, and that the fabric's DNS resolves the VMs of both sites, their
addresses backwards, and an outside name through the forwarder.

Where the router has replicas, check names the one that serves: the
probes through the router went through it.

Exit status 1 if any observation differs from the expectation.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, s, _, err := openLab(name, args)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
			defer stop()
			rs, err := l.Check(ctx, s, full)
			if err != nil {
				return err
			}
			svc, err := l.CheckServices(s)
			if err != nil {
				return err
			}
			n, m := check.Failed(rs), check.FailedServices(svc)
			out := cmd.OutOrStdout()
			view := map[string]any{"probes": rs, "services": svc, "failed_probes": n, "failed_services": m}
			serving := ""
			if r := s.Router; r != nil && r.Replicated() && l.AgentsRunning() {
				// The probes through the router went through this one.
				if serving, _, err = l.RouterServing(ctx, s); err != nil {
					return err
				}
				view["router_serving"] = serving
			}
			if err := emit(out, output, view, func() error {
				if serving != "" {
					fmt.Fprintf(out, "router %s: served by %s (replicas %s)\n", s.Router.Name, serving, strings.Join(s.Router.Replicas(), ", "))
				}
				fmt.Fprint(out, check.Matrix(rs))
				if len(svc) > 0 {
					fmt.Fprintf(out, "\nDHCP and DNS, as each VM sees them:\n%s", check.ServiceTable(svc))
				}
				return nil
			}); err != nil {
				return err
			}
			if n+m > 0 {
				return fmt.Errorf("check: %d of %d probes and %d of %d service checks differ from the spec", n, len(rs), m, len(svc))
			}
			return nil
		},
	}
	labFlag(c, &name)
	outputFlag(c, &output)
	c.Flags().BoolVar(&full, "full", false, "probe every pair of VMs, not one pair per class")
	return c
}

func labVMCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "vm",
		Short: "Add or remove a VM of the running lab, live",
		Long: `Boot or delete a VM as a cloud would while the lab runs: the port goes into
(or out of) the store, every agent converges (remote-group members change
on both sites, connections the change no longer allows are cut), and the lab
plugs or unplugs the VM's tap and namespace. The lab's recorded spec
follows, so "lab up" keeps the change.`,
	}
	var name string
	var v lab.NewVM
	add := &cobra.Command{
		Use:     "add NAME --network N --node NODE",
		Short:   "Boot a VM: namespace, tap, store entry; address and MAC chosen if not given",
		Example: "  bothnia lab vm add epouta-vm9 --network mgmt --node epouta-c1 --security-group mosler",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := lab.New(name)
			if err != nil {
				return err
			}
			v.Name = args[0]
			s, err := l.AddVM(v)
			if err == nil {
				if vm, n := s.VM(v.Name); vm != nil {
					fmt.Fprintf(cmd.OutOrStdout(), "vm %s: %s %s on %s in %s\n", vm.Name, vm.IP, vm.MAC, vm.Node, n.Name)
				}
			}
			return err
		},
	}
	add.Flags().StringVar(&v.Network, "network", "", "the network (required)")
	add.Flags().StringVar(&v.Node, "node", "", "the node that hosts it (required)")
	add.Flags().StringVar(&v.IP, "ip", "", "its address (default: the first free one of its site's pools)")
	add.Flags().StringVar(&v.MAC, "mac", "", "its MAC (default: fa:16:3e:… derived from the name)")
	add.Flags().StringSliceVar(&v.SecurityGroups, "security-group", nil, "its security groups (default: default)")
	_ = add.MarkFlagRequired("network")
	_ = add.MarkFlagRequired("node")
	labFlag(add, &name)
	del := &cobra.Command{
		Use:   "del NAME",
		Short: "Delete a VM: store entry first, then its tap and namespace",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := lab.New(name)
			if err != nil {
				return err
			}
			if _, err := l.DelVM(args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "vm %s: deleted\n", args[0])
			return nil
		},
	}
	labFlag(del, &name)
	c.AddCommand(add, del)
	return c
}

func labNodeCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "node",
		Short: "Pull a node's plug, as a crash would, and put it back",
		Long: `kill stops the node's agent and its DHCP and DNS servers at once (SIGKILL:
its status key stays in the store until its lease runs out) and takes
down every link of its namespaces (the underlay, the router's external
leg), so nothing reaches it and it reaches nothing. revive brings the
lab's links up (the cabling, the VMs' taps), leaves bothnia's own to the
node's agent, which brings them up as it plans them (a router replica
that served before the kill comes back as the standby), and starts what
kill stopped; the rest of the kernel state a real reboot would lose
stays, and the agent converges it as after a restart. Both do nothing to
a node already in that state.`,
	}
	var name string
	for _, verb := range []string{"kill", "revive"} {
		sub := &cobra.Command{
			Use:     verb + " NODE",
			Short:   map[string]string{"kill": "Pull the node's plug", "revive": "Put a killed node's plug back"}[verb],
			Example: "  bothnia lab node " + verb + " knox-ctl",
			Args:    cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				l, err := lab.New(name)
				if err != nil {
					return err
				}
				do := l.KillNode
				if verb == "revive" {
					do = l.ReviveNode
				}
				done, err := do(args[0])
				for _, d := range done {
					fmt.Fprintln(cmd.OutOrStdout(), d)
				}
				if err == nil && len(done) == 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "node %s: nothing to do\n", args[0])
				}
				return err
			},
		}
		labFlag(sub, &name)
		c.AddCommand(sub)
	}
	return c
}
