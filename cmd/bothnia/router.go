package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/bothnia/bothnia/namespace"
	"github.com/bothnia/bothnia/node"
	"github.com/bothnia/bothnia/plan"
	"github.com/bothnia/bothnia/replica"
	"github.com/bothnia/bothnia/spec"
	"github.com/bothnia/bothnia/store"
)

func routerCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "router",
		Short: "A router replica's companions on its node",
	}
	c.AddCommand(conntrackdCmd(), claimCmd())
	return c
}

// claimCmd is how another election system (keepalived's notify_master,
// in the failover benchmark's peer) tells the agents which replica
// serves, where the agents are told not to elect (--external-router-election).
func claimCmd() *cobra.Command {
	var nodeName string
	var sf storeFlags
	c := &cobra.Command{
		Use:    "claim --node NODE",
		Short:  "Write NODE into the router's election key (for another election system)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cli, err := store.Connect(sf.c)
			if err != nil {
				return err
			}
			defer cli.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			s, err := store.Fabric(ctx, cli)
			if err != nil {
				return err
			}
			if s.Router == nil || !slices.Contains(s.Router.Replicas(), nodeName) {
				return fmt.Errorf("router claim: %s is no replica of the fabric's router", nodeName)
			}
			_, err = cli.Put(ctx, store.RouterActiveKey(s.Router.Name), nodeName)
			return err
		},
	}
	sf.add(c)
	c.Flags().StringVar(&nodeName, "node", "", "the replica that serves now")
	_ = c.MarkFlagRequired("node")
	return c
}

// clearStandby empties a standby replica's connection tracking table
// before its conntrackd starts: what the kernel kept from when the
// replica served (its node back from a crash) is stale, with the kernel's
// TCP window tracking, which would find a stream's packets out of window
// after the next takeover. Emptied later, with conntrackd running, the
// deletions would reach the serving replica and cut its live streams.
// A replica whose gw leg is up serves: its table is left alone.
func clearStandby(ns string) error {
	h, nsh, err := namespace.Netlink(ns)
	if err != nil {
		return err
	}
	defer nsh.Close()
	defer h.Close()
	if gw, err := h.LinkByName("gw"); err == nil && gw.Attrs().Flags&net.FlagUp != 0 {
		return nil
	}
	if err := h.ConntrackTableFlush(netlink.ConntrackTable); err != nil {
		return fmt.Errorf("empty the standby's connection tracking table in %s: %w", ns, err)
	}
	return nil
}

func conntrackdCmd() *cobra.Command {
	var specPath, nodeName, prefix, runDir string
	var printOnly bool
	var sf storeFlags
	c := &cobra.Command{
		Use:   "conntrackd --node NODE [--spec FILE]",
		Short: "Run conntrackd in the node's router namespace, syncing with the other replicas",
		Long: `Where the spec's router has replicas (router.nodes), each replica's
connection tracking must reach the others continuously, so that a standby
that takes over forwards established connections, SNAT'd ones included,
without a reset. conntrack-tools' conntrackd does exactly that: this
command writes its configuration for NODE's replica (FTFW sync over the
replicas' state-sync link "ha", entries written straight into the
standbys' kernel tables) into --run-dir, enters the router's namespace
and becomes conntrackd (exec), so a service manager sees and stops
conntrackd itself.

Run it on every replica node, beside the agent (deploy/systemd has the
unit). --print writes the configuration to stdout and runs nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := routerSpec(specPath, sf.c)
			if err != nil {
				return err
			}
			fab, err := node.Desired(s)
			if err != nil {
				return err
			}
			st, err := fab.Node(nodeName)
			if err != nil {
				return err
			}
			var svc *node.Service
			for i := range st.Services {
				if st.Services[i].Kind == "conntrackd" {
					svc = &st.Services[i]
				}
			}
			if svc == nil {
				return fmt.Errorf("router conntrackd: node %s holds no replica of a replicated router; list it in router.nodes (with at least one other node) or do not run conntrackd there", nodeName)
			}
			conf := replica.Conntrackd(svc.Iface, svc.Addr, plan.HANet.String(), runDir)
			if printOnly {
				_, err := fmt.Fprint(cmd.OutOrStdout(), conf)
				return err
			}
			if err := os.MkdirAll(runDir, 0o755); err != nil {
				return err
			}
			path := filepath.Join(runDir, "conntrackd.conf")
			if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
				return err
			}
			// A lock left by a killed instance would stop this one.
			_ = os.Remove(filepath.Join(runDir, "conntrackd.lock"))
			bin, err := exec.LookPath("conntrackd")
			if err != nil {
				return fmt.Errorf("router conntrackd: %w; install Debian's conntrackd package", err)
			}
			ns := prefix + svc.Namespace
			h, err := namespace.Open(ns)
			if err != nil {
				return fmt.Errorf("router conntrackd: the router namespace %s: %w (has the agent converged this node?)", ns, err)
			}
			if err := clearStandby(ns); err != nil {
				return fmt.Errorf("router conntrackd: %w", err)
			}
			// exec keeps the calling thread's network namespace.
			runtime.LockOSThread()
			if err := netns.Set(h); err != nil {
				return fmt.Errorf("router conntrackd: enter %s: %w", ns, err)
			}
			return syscall.Exec(bin, []string{"conntrackd", "-C", path}, os.Environ())
		},
	}
	sf.add(c)
	c.Flags().StringVar(&specPath, "spec", "", "fabric spec file (default: the fabric in the store)")
	c.Flags().StringVar(&nodeName, "node", "", "this node's name in the spec")
	c.Flags().StringVar(&prefix, "ns-prefix", "bn-", "prefix of the node's namespaces (the agent's --ns-prefix)")
	c.Flags().StringVar(&runDir, "run-dir", "/run/bothnia/conntrackd", "where the configuration, lock, control socket and log go")
	c.Flags().BoolVar(&printOnly, "print", false, "print the configuration and exit")
	_ = c.MarkFlagRequired("node")
	return c
}

// routerSpec is the fabric from a spec file, or else from the store.
func routerSpec(path string, c store.ClientConfig) (*spec.Spec, error) {
	if path != "" {
		return spec.Load(path)
	}
	cli, err := store.Connect(c)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return store.Fabric(ctx, cli)
}
