package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/bothnia/bothnia/agent"
	"github.com/bothnia/bothnia/dataplane"
	"github.com/bothnia/bothnia/spec"
	"github.com/bothnia/bothnia/store"
)

// storeFlags are the flags of every command that talks to the store.
type storeFlags struct{ c store.ClientConfig }

func (f *storeFlags) add(c *cobra.Command) {
	c.Flags().StringSliceVar(&f.c.Endpoints, "etcd-endpoints", []string{"unix:///run/bothnia/etcd.sock"},
		"etcd endpoints: https://host:2379,... for a cluster, unix:///path for a local member")
	c.Flags().StringVar(&f.c.CertFile, "etcd-cert", "", "client certificate (TLS to an etcd cluster)")
	c.Flags().StringVar(&f.c.KeyFile, "etcd-key", "", "client certificate key")
	c.Flags().StringVar(&f.c.TrustedCAFile, "etcd-ca", "", "CA that signed the cluster's certificates")
}

func etcdCmd() *cobra.Command {
	var m store.Member
	c := &cobra.Command{
		Use:   "etcd",
		Short: "Run an etcd member inside bothnia: the lab's store, or one member of the sites' cluster",
		Long: `Run an etcd member embedded in bothnia. Alone (the default), it serves
clients on a unix socket and opens no port others would need: the store of
the lab and of a one-machine deployment.

Between the two sites run three members (two at Knox, one at ePouta, see
deploy/README.md) with --name, --listen-peer, --initial-cluster and TLS:
the cluster keeps a majority when any one member, or the ePouta side of the
link, is lost, and the agents of the side that lost the majority keep their
nodes as they are until it comes back.`,
		Example: `  bothnia etcd --data-dir /var/lib/bothnia/etcd --listen-client unix:///run/bothnia/etcd.sock
  bothnia etcd --name knox-1 --data-dir /var/lib/bothnia/etcd \
    --listen-client https://10.1.0.11:2379 --listen-peer https://10.1.0.11:2380 \
    --initial-cluster knox-1=https://10.1.0.11:2380,knox-2=https://10.1.0.12:2380,epouta-1=https://10.2.0.11:2380 \
    --client-cert server.pem --client-key server.key --client-ca ca.pem \
    --peer-cert peer.pem --peer-key peer.key --peer-ca ca.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			srv, err := store.StartMember(m)
			if err != nil {
				return err
			}
			defer srv.Close()
			fmt.Fprintf(cmd.OutOrStdout(), "etcd member %s ready at %s (data in %s)\n", m.Name, srv.ClientURL, m.Dir)
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			select {
			case <-ctx.Done():
				return nil
			case err := <-srv.Err():
				return err
			}
		},
	}
	f := c.Flags()
	f.StringVar(&m.Dir, "data-dir", "/var/lib/bothnia/etcd", "the member's data directory")
	f.StringVar(&m.ClientURL, "listen-client", "unix:///run/bothnia/etcd.sock", "where clients connect; comma-separated for several (a unix socket for the agents, http://127.0.0.1:2379 for bothnia's ML2 driver on the same host)")
	f.StringVar(&m.Name, "name", "bothnia", "the member's name in the cluster")
	f.StringVar(&m.PeerURL, "listen-peer", "", "where the other members reach this one (default: a free loopback port, one member)")
	f.StringVar(&m.InitialCluster, "initial-cluster", "", "every member as name=peer-url, comma-separated (default: this one alone)")
	f.StringVar(&m.State, "initial-cluster-state", "new", "new when forming the cluster, existing when joining one")
	f.StringVar(&m.ClientCert, "client-cert", "", "server certificate for clients")
	f.StringVar(&m.ClientKey, "client-key", "", "its key")
	f.StringVar(&m.ClientCA, "client-ca", "", "CA whose client certificates are accepted (and required)")
	f.StringVar(&m.PeerCert, "peer-cert", "", "certificate for the other members")
	f.StringVar(&m.PeerKey, "peer-key", "", "its key")
	f.StringVar(&m.PeerCA, "peer-ca", "", "CA of the other members' certificates (required of them)")
	return c
}

func pushCmd() *cobra.Command {
	var sf storeFlags
	var yes bool
	c := &cobra.Command{
		Use:   "push SPEC",
		Short: "Write a spec into the store, object by object, after showing what changes",
		Long: `Push validates a spec, compares it with what the store holds and prints
what would change, object by object (+ add, ~ change, - remove), like a
plan. With --yes it writes the changes in one transaction, which fails if
the store changed after it was read (run push again). Agents converge their
nodes as soon as the write lands. Pushing the same spec twice changes
nothing.`,
		Example: "  bothnia push examples/knox-epouta.yaml\n  bothnia push examples/knox-epouta.yaml --yes",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			changes, rev, err := push(cmd.Context(), sf.c, args[0], yes)
			out := cmd.OutOrStdout()
			for _, ch := range changes {
				fmt.Fprintln(out, ch)
			}
			if err != nil {
				return err
			}
			switch {
			case len(changes) == 0:
				fmt.Fprintln(out, "no changes: the store already holds this spec")
			case yes:
				fmt.Fprintf(out, "%s: written at revision %d\n", store.Summary(changes), rev)
			default:
				fmt.Fprintf(out, "%s; run again with --yes to write them\n", store.Summary(changes))
			}
			return nil
		},
	}
	sf.add(c)
	c.Flags().BoolVar(&yes, "yes", false, "write the changes")
	return c
}

// push computes (and with write, writes) what turns the store into the spec.
func push(ctx context.Context, cfg store.ClientConfig, path string, write bool) ([]store.Change, int64, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	s, err := spec.Load(path)
	if err != nil {
		return nil, 0, err
	}
	cli, err := store.Connect(cfg)
	if err != nil {
		return nil, 0, err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return store.PushRetrying(ctx, cli, s, write, 3*time.Second)
}

func getCmd() *cobra.Command {
	var sf storeFlags
	var output string
	c := &cobra.Command{
		Use:   "get [KIND]",
		Short: "List what the store holds: the fabric, networks, ports, security groups, agents' status",
		Long: `Get lists the store's objects (KIND narrows it: fabric, networks, ports,
security_groups, status). -o table prints one line per object, -o yaml and
-o json print the objects themselves, keyed by their store key.`,
		Example: "  bothnia get ports\n  bothnia get status -o json",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cli, err := store.Connect(sf.c)
			if err != nil {
				return err
			}
			defer cli.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			objs, rev, err := store.Load(ctx, cli)
			if err != nil {
				return err
			}
			prefix := store.Prefix
			if len(args) == 1 {
				prefix += args[0]
			}
			docs := map[string]any{}
			var keys []string
			for k, v := range objs {
				if !strings.HasPrefix(k, prefix) {
					continue
				}
				var doc any
				if err := yaml.Unmarshal(v, &doc); err != nil {
					doc = string(v)
				}
				docs[k] = doc
				keys = append(keys, k)
			}
			slices.Sort(keys)
			out := cmd.OutOrStdout()
			switch output {
			case "json":
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(map[string]any{"revision": rev, "objects": docs})
			case "yaml":
				return yaml.NewEncoder(out).Encode(map[string]any{"revision": rev, "objects": docs})
			case "table", "":
				for _, k := range keys {
					fmt.Fprintln(out, strings.TrimPrefix(k, store.Prefix))
				}
				fmt.Fprintf(out, "%d objects at revision %d\n", len(keys), rev)
				return nil
			default:
				return fmt.Errorf("get: -o %q is not a format; use table, yaml or json", output)
			}
		},
	}
	sf.add(c)
	c.Flags().StringVarP(&output, "output", "o", "table", "table, yaml or json")
	return c
}

func agentCmd() *cobra.Command {
	var sf storeFlags
	var cfg agent.Config
	var prefix string
	var debug bool
	c := &cobra.Command{
		Use:   "agent --node NODE",
		Short: "Keep this host converged with the store (one agent per node)",
		Long: `The agent watches the store and keeps this host's part of the fabric
converged by itself: links, routes, NAT and the firewall, written as
differences only. A port added or removed changes that port's links and
firewall elements; a member change touches only set elements. When a change
narrows what is allowed, it deletes the connections the firewall no longer
allows. Every --resync it reads the kernel back and repairs drift (a deleted
table, a hand-edited rule, an element removed by hand).

On start it adopts what the kernel already holds, without flushing, so a
restart never drops an established connection. If the store is unreachable
the node keeps its last state, the agent retries and /readyz says not
ready. It serves /healthz, /readyz and Prometheus /metrics on --listen.`,
		Example: "  bothnia agent --node knox-c1 --etcd-endpoints https://10.1.0.1:2379 --etcd-cert c.pem --etcd-key c.key --etcd-ca ca.pem",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.Store = sf.c
			cfg.Target = dataplane.Target{Prefix: prefix}
			level := slog.LevelInfo
			if debug {
				level = slog.LevelDebug
			}
			cfg.Log = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return agent.New(cfg).Run(ctx)
		},
	}
	sf.add(c)
	c.Flags().StringVar(&cfg.Node, "node", "", "the spec's name for this host (required)")
	c.Flags().StringVar(&prefix, "ns-prefix", "bn-", "prefix of the router/DHCP namespaces bothnia owns")
	c.Flags().DurationVar(&cfg.Resync, "resync", 10*time.Second, "how often the kernel is read back and drift repaired")
	c.Flags().StringVar(&cfg.Listen, "listen", "127.0.0.1:9464", "health and metrics (host:port or unix:/path; empty: none)")
	c.Flags().BoolVar(&debug, "debug", false, "log every change")
	c.Flags().StringVar(&cfg.Conntrackd, "conntrackd-conf", "/run/bothnia/conntrackd/conntrackd.conf",
		"a router replica's conntrackd (bothnia router conntrackd): told to send its table when this node starts serving")
	c.Flags().BoolVar(&cfg.StandIn, "foreign-stand-in", false, "lab only: wire a foreign site's node as its own cloud would (plain bridges, Neutron's iptables layout)")
	_ = c.Flags().MarkHidden("foreign-stand-in")
	c.Flags().BoolVar(&cfg.ExternalElection, "external-router-election", false,
		"bench only: leave the choice of the serving router replica to another system (keepalived, through bothnia router claim)")
	_ = c.Flags().MarkHidden("external-router-election")
	_ = c.MarkFlagRequired("node")
	return c
}
