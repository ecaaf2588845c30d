package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/bothnia/bothnia/openstack"
	"github.com/bothnia/bothnia/spec"
	"github.com/bothnia/bothnia/store"
)

// osFlags are the flags of every openstack subcommand: the store and
// where the clouds are described.
type osFlags struct {
	sf     storeFlags
	opts   openstack.Options
	output string
}

func (f *osFlags) add(c *cobra.Command) {
	f.sf.add(c)
	c.Flags().StringVar(&f.opts.CloudsFile, "clouds", "", "clouds.yaml naming each site's cloud (default: the standard search: $OS_CLIENT_CONFIG_FILE, ./, ~/.config/openstack/, /etc/openstack/)")
	c.Flags().DurationVar(&f.opts.Timeout, "timeout", 30*time.Second, "bound on each request to a cloud")
	outputFlag(c, &f.output)
}

// connect opens the store, reads the fabric from it and connects every
// site's cloud.
func (f *osFlags) connect(ctx context.Context) (*clientv3.Client, *spec.Spec, map[string]*openstack.Cloud, error) {
	cli, err := store.Connect(f.sf.c)
	if err != nil {
		return nil, nil, nil, err
	}
	s, err := store.Fabric(ctx, cli)
	if err != nil {
		cli.Close()
		return nil, nil, nil, err
	}
	clouds, err := openstack.ConnectSites(ctx, s, f.opts)
	if err != nil {
		cli.Close()
		return nil, nil, nil, err
	}
	return cli, s, clouds, nil
}

func openstackCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "openstack",
		Short: "Read the VMs from both clouds' Neutron, set their subnets, mirror remote groups into a foreign cloud",
		Long: `The sites are OpenStack clouds: each site names its cloud (sites.<site>.cloud,
an entry of clouds.yaml; credentials as the openstack CLI reads them).

  import    map every cloud's ports and security groups into the store
  watch     keep the store in step with the clouds (polls revision numbers)
  plan      show how each cloud's subnet differs from its site's half
  apply     make it so (the seed's "neutron subnet-update", idempotent)
  sync      keep a foreign cloud's address groups holding the other sites'
            members of its remote groups, so stock Neutron admits them

A managed site (bothnia's agents on its nodes) takes its security group
rules from its cloud; a foreign site (mode: foreign, only an API account)
gives membership only: its own Neutron filters its ports.`,
	}
	c.AddCommand(osImportCmd(), osWatchCmd(), osPlanCmd(false), osPlanCmd(true), osSyncCmd())
	return c
}

func osImportCmd() *cobra.Command {
	var f osFlags
	var yes bool
	c := &cobra.Command{
		Use:   "import",
		Short: "Map every cloud's ports and security groups into the store (a diff first; --yes writes)",
		Long: `Import reads networks, subnets, ports and security groups from every
site's cloud and maps them into the fabric: a network by its VLAN (the
fabric network's segment), a port's node by its binding host, its tap by
its UUID as Nova names it. A site's VMs come from its cloud alone. Every
port it cannot map is listed with the reason (not bound yet, a host that is
no node of the site, no address in the fabric, a group name two groups
share); the rest is written. Importing twice changes nothing.`,
		Example: "  bothnia openstack import --clouds /etc/bothnia/clouds.yaml\n  bothnia openstack import --yes -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Minute)
			defer cancel()
			cli, _, clouds, err := f.connect(ctx)
			if err != nil {
				return err
			}
			defer cli.Close()
			invs, err := openstack.ReadAll(ctx, clouds)
			if err != nil {
				return err
			}
			rep, err := openstack.Import(ctx, cli, invs, yes)
			if err != nil {
				return err
			}
			return emit(cmd.OutOrStdout(), f.output, rep, func() error { return printImport(cmd.OutOrStdout(), rep, yes) })
		},
	}
	f.add(c)
	c.Flags().BoolVar(&yes, "yes", false, "write the changes")
	return c
}

func printImport(w io.Writer, rep *openstack.Report, yes bool) error {
	for _, ch := range rep.Changes {
		fmt.Fprintln(w, ch)
	}
	for _, u := range rep.Unmapped {
		fmt.Fprintln(w, "not mapped:", u)
	}
	switch {
	case len(rep.Changes) == 0:
		fmt.Fprintln(w, "no changes: the store already holds what the clouds say")
	case yes:
		fmt.Fprintf(w, "%s: written at revision %d\n", store.Summary(rep.Changes), rep.Revision)
	default:
		fmt.Fprintf(w, "%s; run again with --yes to write them\n", store.Summary(rep.Changes))
	}
	return nil
}

func osWatchCmd() *cobra.Command {
	var f osFlags
	var interval time.Duration
	c := &cobra.Command{
		Use:   "watch",
		Short: "Keep the store in step with the clouds: a VM booted in either cloud reaches the agents",
		Long: `Watch polls every cloud's revision numbers (ports, networks, subnets,
groups) every --interval and imports when any moved. A cloud that cannot be
read is retried with backoff, and nothing is written meanwhile: a half-read
cloud would remove the ports it missed. Run one watch per deployment (a
second one only repeats the first's writes).`,
		Example: "  bothnia openstack watch --interval 5s",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			cli, _, clouds, err := f.connect(ctx)
			if err != nil {
				return err
			}
			defer cli.Close()
			out := cmd.OutOrStdout()
			return openstack.Watch(ctx, cli, clouds, interval, func(rep *openstack.Report) {
				if len(rep.Changes) > 0 {
					_ = emit(out, f.output, rep, func() error { return printImport(out, rep, true) })
				}
			})
		},
	}
	f.add(c)
	c.Flags().DurationVar(&interval, "interval", 10*time.Second, "how often to poll the clouds")
	return c
}

func osPlanCmd(apply bool) *cobra.Command {
	var f osFlags
	use, short := "plan", "Show how each cloud's subnet differs from its site's half of the fabric"
	if apply {
		use, short = "apply", "Set each cloud's subnet to its site's half: pools, DNS, gateway, DHCP (idempotent)"
	}
	c := &cobra.Command{
		Use:   use,
		Short: short,
		Long: `The seed's manual "neutron subnet-update", derived from the fabric: each
site's subnet allocates from that site's pools only (the two clouds never
hand out one address twice), names the fabric's DNS server and the router
as gateway, and has DHCP off where bothnia serves it (a managed site) and
on where the site's own Neutron does (a foreign site). plan prints the
difference; apply writes it and prints what it wrote; a second apply
writes nothing.`,
		Example: "  bothnia openstack plan\n  bothnia openstack apply",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Minute)
			defer cancel()
			cli, s, clouds, err := f.connect(ctx)
			if err != nil {
				return err
			}
			defer cli.Close()
			invs, err := openstack.ReadAll(ctx, clouds)
			if err != nil {
				return err
			}
			changes, err := openstack.PlanSubnets(s, invs)
			if err != nil {
				return err
			}
			if apply {
				if err := openstack.ApplySubnets(ctx, clouds, changes); err != nil {
					return err
				}
			}
			out := cmd.OutOrStdout()
			return emit(out, f.output, changes, func() error {
				for _, ch := range changes {
					fmt.Fprintln(out, ch)
				}
				switch {
				case len(changes) == 0:
					fmt.Fprintln(out, "no changes: every cloud's subnet matches its site")
				case apply:
					fmt.Fprintf(out, "%d subnets updated\n", len(changes))
				default:
					fmt.Fprintf(out, "%d subnets to update; run bothnia openstack apply\n", len(changes))
				}
				return nil
			})
		},
	}
	f.add(c)
	return c
}

func osSyncCmd() *cobra.Command {
	var f osFlags
	var once, enforced bool
	var mechanism string
	var interval time.Duration
	c := &cobra.Command{
		Use:   "sync",
		Short: "Keep each foreign cloud admitting exactly the other sites' members of its remote groups",
		Long: `A foreign site's Neutron knows its own ports only: its rule "ingress from
members of mosler" admits ePouta's members, not Knox's. Beside every such
rule sync keeps mirrors that admit the group's members at the other sites
(fixed IPs and allowed address pairs, from the store), described
"bothnia-mirror of rule <id>", and nothing else of the cloud is changed. A
member that goes leaves the mirrors on the next round.

--mechanism prefixes (the default) writes one mirror per prefix of the
fewest that cover exactly the members, as remote_ip_prefix, which every
Neutron release enforces. The rules count against the project's
security_group_rule quota (Neutron's default is 100): before writing, sync
says which project would exceed it and what to raise, and writes none of
that project's mirrors.

--mechanism address-groups writes one mirror per rule naming an address
group bothnia-<group> that holds the members. Only for a cloud whose
firewall enforces remote address groups: Zed's iptables driver renders
such a rule with no source match, open to every source, and the API does
not say which driver a cloud runs, so it needs --address-groups-enforced.`,
		Example: "  bothnia openstack sync --once\n  bothnia openstack sync --interval 10s\n  bothnia openstack sync --mechanism address-groups --address-groups-enforced",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			switch mechanism {
			case openstack.ByPrefixes:
			case openstack.ByAddressGroups:
				if !enforced {
					return fmt.Errorf("--mechanism address-groups: a cloud whose firewall ignores remote address groups (Zed's iptables driver, before bug 2058138 was fixed) would admit every source; confirm the cloud enforces them and pass --address-groups-enforced, or use --mechanism prefixes")
				}
			default:
				return fmt.Errorf("--mechanism %q: use prefixes or address-groups", mechanism)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			cli, _, clouds, err := f.connect(ctx)
			if err != nil {
				return err
			}
			defer cli.Close()
			out := cmd.OutOrStdout()
			for {
				done, err := syncOnce(ctx, cli, clouds, mechanism)
				var all []openstack.SyncAction
				for _, acts := range done {
					all = append(all, acts...)
				}
				if e := emit(out, f.output, all, func() error {
					for _, a := range all {
						fmt.Fprintln(out, a)
					}
					if once && len(all) == 0 && err == nil {
						fmt.Fprintln(out, "no changes: every foreign cloud admits exactly the other sites' members")
					}
					return nil
				}); e != nil {
					return e
				}
				var qe *openstack.QuotaError
				if errors.As(err, &qe) && !once {
					// Said every round until raised; the rest is in step.
					fmt.Fprintln(cmd.ErrOrStderr(), "error:", err)
					err = nil
				}
				if err != nil || once {
					return err
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(interval):
				}
			}
		},
	}
	f.add(c)
	c.Flags().BoolVar(&once, "once", false, "one round, then exit (a second run is a no-op)")
	c.Flags().StringVar(&mechanism, "mechanism", openstack.ByPrefixes, "prefixes (every release) or address-groups (where the cloud enforces them)")
	c.Flags().BoolVar(&enforced, "address-groups-enforced", false, "the foreign clouds' firewalls enforce remote address groups (OVN; the iptables and OVS drivers with bug 2058138 fixed)")
	c.Flags().DurationVar(&interval, "interval", 10*time.Second, "time between rounds without --once")
	return c
}

// syncOnce runs one sync round for every foreign site with a cloud, from
// the fabric as the store holds it now.
func syncOnce(ctx context.Context, cli *clientv3.Client, clouds map[string]*openstack.Cloud, mechanism string) (map[string][]openstack.SyncAction, error) {
	s, err := store.Fabric(ctx, cli)
	if err != nil {
		return nil, err
	}
	return openstack.SyncSites(ctx, s, clouds, mechanism)
}
