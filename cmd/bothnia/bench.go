package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

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
	var neutronMax int
	fw := &cobra.Command{
		Use:   "firewall",
		Short: "Time initial programming and one-port changes: nftables, iptables, and Neutron's own driver",
		Long: `Builds a node with N secured ports in a namespace of its own for each size,
and prints in one run: the initial programming with each renderer, and the
time to add one port, timed the same way for both of bothnia's renderers
(the node's firewall re-rendered and the difference written, as the agent
does), a full iptables-restore of the Neutron layout, and Neutron's own
IptablesFirewallDriver (python3-neutron) with the same rules, up to
--neutron-max ports; then the ratios. Each one-port time of bothnia is the
median of --repeat runs. Large sizes with iptables and Neutron take minutes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ns, err := ints(sizes)
			if err != nil {
				return err
			}
			return bench.Firewall(cmd.OutOrStdout(), "bnbench", ns, repeat, !noIPT, neutronMax)
		},
	}
	fw.Flags().StringVar(&sizes, "sizes", "100,1000,3000,10000", "comma-separated port counts")
	fw.Flags().IntVar(&repeat, "repeat", 5, "one-port changes per size (median printed)")
	fw.Flags().BoolVar(&noIPT, "no-iptables", false, "measure nftables only")
	fw.Flags().IntVar(&neutronMax, "neutron-max", 3000, "largest size Neutron's own driver is run at (0: not at all)")
	c.AddCommand(fw)
	var runs int
	bi := &cobra.Command{
		Use:   "binding",
		Short: "Nova's binding PUT to ACTIVE: a fabric port (bothnia's ML2 driver and agent) beside Neutron's own agent on the same node",
		Long: `Starts a real neutron-server with bothnia's ML2 driver before linuxbridge
(MariaDB, RabbitMQ), a lab Knox node running bothnia's agent and Neutron's
linuxbridge agent (mapping only another network's physical network, as on
a host the two share), then boots --runs ports of each kind as Nova does,
alternating: the binding PUT (host, device_owner, device_id), the tap
(into Neutron's bridge for linuxbridge's vif_type bridge; in no bridge for
bothnia's vif_type tap), and the wait for ACTIVE, the moment Nova gets
network-vif-plugged. Prints mean, p50, min and max per kind and the ratio.
Needs the Debian packages scripts/install-deps.sh installs; takes about a
minute and 2 GiB of memory, all removed afterwards.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return bench.Binding(cmd.OutOrStdout(), "bnbind", runs)
		},
	}
	bi.Flags().IntVar(&runs, "runs", 5, "ports of each kind")
	c.AddCommand(bi)
	var kills int
	fo := &cobra.Command{
		Use:   "failover [SPEC]",
		Short: "Kill the serving router replica's node again and again: forwarding, DNS, a download through SNAT, leases; beside keepalived as Neutron L3 HA runs it",
		Long: `Brings up a lab of SPEC (default examples/knox-epouta-ha.yaml, whose router has
two replicas on Knox; the foreign site stood in for, it plays no part)
and, from a VM on a Knox node that holds no replica, runs a download
through SNAT, a UDP echo through the router every 10 ms, a DNS query loop
to the site's two resolvers (a stub resolver: the first, then the second
after 150 ms) and a lease renewal after each kill. Then, --kills times,
pulls the plug of the serving replica's node (bothnia lab node kill),
waits for the other to serve, measures, and revives the node.

It does this three times in one run, each in a lab of its own: bothnia's
replicas (the store's election, conntrackd's state sync); the same without
conntrackd; and Neutron L3 HA's way, keepalived's VRRP electing as
Neutron's L3 agent configures it (every instance BACKUP, nopreempt,
priority 50, advert_int 2 s; its notify_master writes the store's election
key, which the agents follow) with no connection state. Prints per kill
and, per kind, the time without forwarding and without DNS answers
(p50/p99/max), downloads reset and leases renewed, and the ratio of the
median outage to bothnia's. About 6 s per kill (12 s with keepalived);
everything is removed afterwards. Needs conntrackd and keepalived.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			spec := "examples/knox-epouta-ha.yaml"
			if len(args) == 1 {
				spec = args[0]
			}
			return bench.Failover(cmd.OutOrStdout(), bench.FailoverOptions{Spec: spec, Kills: kills, Prefix: "bnfail"})
		},
	}
	fo.Flags().IntVar(&kills, "kills", 20, "kills of each kind of replicas")
	c.AddCommand(fo)
	var count, bulk int
	pr := &cobra.Command{
		Use:   "propagation",
		Short: "Store write to set element on the other site's node, over live port creations and deletions",
		Long: `Builds a lab with etcd and an agent per node, then creates and deletes
--count ports at Knox, one at a time, timing each from the store write to
the kernel's own event for the address entering (or leaving) the remote
group's set on the ePouta node. Prints p50/p99/max. Then writes --bulk
ports at once and reports how long the Knox agent takes to converge them,
its CPU time for it and its resident memory.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return bench.Propagation(cmd.OutOrStdout(), "bnprop", count, bulk)
		},
	}
	pr.Flags().IntVar(&count, "count", 1000, "ports created and deleted, one at a time")
	pr.Flags().IntVar(&bulk, "bulk", 10000, "ports written at once afterwards (0: skip)")
	c.AddCommand(pr)
	var rates, generator string
	var secs int
	dh := &cobra.Command{
		Use:   "dhcp",
		Short: "The highest DORA rate within 1% dropped: bothnia's server vs dnsmasq, both under the same load generator",
		Long: `Runs bothnia's DHCP server (logging every lease, as in production) and then
dnsmasq in a namespace, both serving the same 10,000 fixed hosts, each
loaded from another namespace at rising offered rates until more than 1%
of the exchanges (DISCOVER to ACK) go unanswered. Prints every step with
the CPU the load generator and the server used and the datagrams either
side's receive buffer dropped, each server's highest rate within 1%, and
the ratio.

--generator bothnia (default) is this binary's own DORA client behind a
relay, which batches its writes and reads; --generator perfdhcp is Kea's
(Debian package kea-admin), which took a whole core here from about 7,500
exchanges per second, so a search with it finds its own limit. A step
whose generator used a whole core says so.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			rs, err := ints(rates)
			if err != nil {
				return err
			}
			return bench.DHCP(cmd.OutOrStdout(), "bnbdhcp", rs, secs, generator)
		},
	}
	dh.Flags().StringVar(&generator, "generator", "bothnia", "load generator: bothnia or perfdhcp")
	dh.Flags().StringVar(&rates, "rates", "1000,2000,4000,8000,11700,16000,24000,32000,48000", "offered DORA rates per second, rising")
	dh.Flags().IntVar(&secs, "seconds", 5, "seconds per rate")
	c.AddCommand(dh)
	var dpSizes, dpFirewalls string
	var dpSecs int
	dp := &cobra.Command{
		Use:   "datapath",
		Short: "TCP throughput and request/response latency between two VMs: no firewall, nftables, iptables, by ports programmed",
		Long: `Builds a two-node lab and measures, between a VM on each node, one TCP
stream's throughput (iperf3, median of three runs) and the p50/p99 of
1-byte request/response exchanges: with no firewall (port security off),
then with the nftables and the iptables renderings with each --sizes other
ports programmed on both nodes. Prints every configuration and the
throughput relative to no firewall. Needs iperf3 (scripts/install-bench-deps.sh).

BOTHNIA_BENCH_PERF=DIR samples every CPU (perf record -a -g) during each
configuration's first iperf3 run into DIR/<firewall>-<ports>.data, to see
where the cycles go: perf report -i DIR/nftables-10000.data --no-children.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ns, err := intsFrom(dpSizes, 0)
			if err != nil {
				return err
			}
			fws := strings.Split(dpFirewalls, ",")
			for _, f := range fws {
				if f != "none" && f != "nftables" && f != "iptables" {
					return fmt.Errorf("--firewalls: %q is not none, nftables or iptables", f)
				}
			}
			if fws[0] != "none" {
				return fmt.Errorf("--firewalls must start with none: the other rows are ratios to it")
			}
			return bench.Datapath(cmd.OutOrStdout(), "bndp", fws, ns, dpSecs)
		},
	}
	dp.Flags().StringVar(&dpFirewalls, "firewalls", "none,nftables,iptables", "configurations measured, none first")
	dp.Flags().StringVar(&dpSizes, "sizes", "0,1000,10000", "other ports programmed on each node")
	dp.Flags().IntVar(&dpSecs, "seconds", 5, "seconds per iperf3 run")
	c.AddCommand(dp)
	var dnsSecs int
	var dnsGen string
	dn := &cobra.Command{
		Use:   "dns",
		Short: "The highest query rate under 1% lost, and its p50/p99 latency: bothnia vs dnsmasq under the same load generator",
		Long: `Runs bothnia's DNS server and then dnsmasq in a namespace, with the same
names (authoritative) and the same upstream (cached), and raises the
offered query rate step by step until the server loses 1% of the queries
or answers less than 99% of the offered rate. Each step prints the CPU of
the load generator and of the server and the datagrams either side's
receive buffer dropped. It prints the last rate each sustained and p50/p99
latency at that rate; then the ratio. A failed or silent generator run
fails the bench.

--generator bothnia (default) is this binary's own, which sends and reads
in batches from 8 sockets; --generator dnsperf (8 clients, 2 threads;
latency then in a run of its own) took a whole core here from about
70,000 queries per second. Needs scripts/install-bench-deps.sh (dnsmasq,
dnsperf).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return bench.DNS(cmd.OutOrStdout(), "bnbdns", dnsSecs, dnsGen)
		},
	}
	dn.Flags().IntVar(&dnsSecs, "seconds", 5, "seconds per step of the rate search")
	dn.Flags().StringVar(&dnsGen, "generator", "bothnia", "load generator: bothnia or dnsperf")
	c.AddCommand(dn)
	for _, sub := range c.Commands() {
		sub.RunE = oneBenchAtATime(sub.RunE)
	}
	// The generators run inside bench dhcp and bench dns, which hold the lock.
	c.AddCommand(doraCmd(), dnsLoadCmd())
	return c
}

func ints(s string) ([]int, error) { return intsFrom(s, 1) }

// intsFrom parses comma-separated numbers of at least lo.
func intsFrom(s string, lo int) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < lo {
			return nil, fmt.Errorf("bench: %q is not a number of at least %d", f, lo)
		}
		out = append(out, n)
	}
	return out, nil
}

// oneBenchAtATime runs a benchmark only while no other runs on this
// machine: two at once measure each other, and two of a kind build the
// same namespaces (a lab of one was torn down under the other's feet).
// The lock is the kernel's (flock), so a killed run leaves none behind.
func oneBenchAtATime(run func(*cobra.Command, []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		const path = "/run/bothnia/bench.lock"
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			pid, _ := os.ReadFile(path)
			return fmt.Errorf("bench: another benchmark is running (pid %s, lock %s); wait for it, or stop it first", strings.TrimSpace(string(pid)), path)
		}
		_ = f.Truncate(0)
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
		return run(cmd, args)
	}
}

// doraCmd is the DHCP load generator bench dhcp runs in the client's
// namespace (a process of its own, so its CPU is measured apart).
func doraCmd() *cobra.Command {
	var relay, server, base string
	var clients, rate, secs int
	c := &cobra.Command{
		Use:    "dora",
		Short:  "DHCP load generator behind a relay (run by bench dhcp)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := netip.ParseAddr(relay)
			if err != nil {
				return fmt.Errorf("--relay: %w", err)
			}
			s, err := netip.ParseAddr(server)
			if err != nil {
				return fmt.Errorf("--server: %w", err)
			}
			mac, err := net.ParseMAC(base)
			if err != nil {
				return fmt.Errorf("--base-mac: %w", err)
			}
			return bench.DORA(cmd.OutOrStdout(), r, s, mac, clients, rate, time.Duration(secs)*time.Second)
		},
	}
	c.Flags().StringVar(&relay, "relay", "", "relay address to send from (port 67)")
	c.Flags().StringVar(&server, "server", "", "DHCP server address")
	c.Flags().StringVar(&base, "base-mac", "00:0c:01:00:00:00", "first client MAC")
	c.Flags().IntVar(&clients, "clients", 10000, "distinct clients, cycled through")
	c.Flags().IntVar(&rate, "rate", 1000, "DISCOVERs per second")
	c.Flags().IntVar(&secs, "seconds", 5, "seconds")
	return c
}

// dnsLoadCmd is the DNS load generator bench dns runs in the client's
// namespace (a process of its own, so its CPU is measured apart).
func dnsLoadCmd() *cobra.Command {
	var server, names string
	var rate, secs int
	c := &cobra.Command{
		Use:    "dnsload",
		Short:  "DNS query load generator (run by bench dns)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := netip.ParseAddr(server)
			if err != nil {
				return fmt.Errorf("--server: %w", err)
			}
			return bench.DNSLoad(cmd.OutOrStdout(), s, names, rate, time.Duration(secs)*time.Second)
		},
	}
	c.Flags().StringVar(&server, "server", "", "DNS server address (port 53)")
	c.Flags().StringVar(&names, "names", "", `file of "name A" lines`)
	c.Flags().IntVar(&rate, "rate", 10000, "queries per second")
	c.Flags().IntVar(&secs, "seconds", 5, "seconds")
	return c
}
