package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/bothnia/bothnia/dhcp"
	"github.com/bothnia/bothnia/dns"
	"github.com/bothnia/bothnia/internal/logbuf"
	"github.com/bothnia/bothnia/internal/sockbuf"
	"github.com/bothnia/bothnia/spec"
)

func serveMetrics(addr string, reg *prometheus.Registry, log *slog.Logger) {
	if addr == "" {
		return
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	go func() {
		if err := http.ListenAndServe(addr, mux); err != nil {
			log.Error("metrics", "err", err)
		}
	}()
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func dhcpCmd() *cobra.Command {
	var specPath, site, iface, address, metrics string
	var debug bool
	c := &cobra.Command{
		Use:   "dhcp --spec FILE --site SITE",
		Short: "Run a site's DHCPv4 server (inside the site's DHCP namespace)",
		Long: `Serves DHCPv4 on UDP 67 for the VMs the spec places on SITE: each MAC gets
its fixed address, mask, router, DNS, domain and search list, hostname,
lease time, interface MTU (option 26, the link's MTU) and the spec's
classless static routes. MACs of other sites and unknown MACs get no
answer, so the two sites' servers on one segment never race; a request for
a wrong address is NAKed. The spec file is re-read when it changes.

A site may run a second server (dhcp.second) on another node: run this
there with --address set to its address. Both hand out the same fixed
leases, so a VM whose server is lost renews with the other.

Run it inside the DHCP namespace, e.g.
  ip netns exec qdhcp-<network id> bothnia dhcp --spec fabric.yaml --site knox --iface ns-<port>`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			level := slog.LevelInfo
			if debug {
				level = slog.LevelDebug
			}
			// Every lease is logged: buffered, flushed every 200 ms, so that
			// thousands of leases a second do not cost a write each.
			logw := logbuf.New(os.Stderr, 200*time.Millisecond)
			defer logw.Close()
			log := slog.New(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: level})).With("service", "dhcp", "site", site)
			s, err := spec.Load(specPath)
			if err != nil {
				return err
			}
			cfg, err := dhcp.ConfigForServer(s, site, address)
			if err != nil {
				return err
			}
			reg := prometheus.NewRegistry()
			srv := dhcp.New(cfg, log, dhcp.NewMetrics(reg))
			serveMetrics(metrics, reg, log)
			ctx, stop := signalContext()
			defer stop()
			go spec.Watch(ctx, specPath, 2*time.Second, log, func(s *spec.Spec) {
				if c, err := dhcp.ConfigForServer(s, site, address); err == nil {
					srv.SetConfig(c)
				}
			})
			log.Info("serving", "server", cfg.ServerIP, "hosts", len(cfg.Hosts), "iface", iface)
			return srv.ListenAndServe(ctx, iface)
		},
	}
	c.Flags().StringVar(&specPath, "spec", "", "fabric spec (required)")
	c.Flags().StringVar(&site, "site", "", "the site this server answers for (required)")
	c.Flags().StringVar(&address, "address", "", "which of the site's servers this is: its address (default: the first, dhcp.address)")
	c.Flags().StringVar(&iface, "iface", "", "interface to serve on (default: all)")
	c.Flags().BoolVar(&debug, "debug", false, "log every message, including those left unanswered")
	c.Flags().StringVar(&metrics, "metrics", "", "serve Prometheus metrics on this address, e.g. 127.0.0.1:9101")
	_ = c.MarkFlagRequired("spec")
	_ = c.MarkFlagRequired("site")
	return c
}

func dnsCmd() *cobra.Command {
	var specPath, listen, metrics string
	var udpSockets int
	c := &cobra.Command{
		Use:   "dns --spec FILE",
		Short: "Run the fabric's DNS server (inside the DNS site's DHCP namespace)",
		Long: `Answers authoritatively for the VM names of both sites under the fabric's
domain (A records, and PTR for the fabric's addresses), and forwards every
other name to the spec's forwarders, caching answers for their TTL within
dns.cache_size entries. UDP and TCP; UDP answers are truncated to the
client's size. Sources outside the fabric are REFUSED: it is no open
resolver. Names follow the spec file live.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("service", "dns")
			s, err := spec.Load(specPath)
			if err != nil {
				return err
			}
			if s.DNS == nil {
				return fmt.Errorf("dns: %s has no dns section", specPath)
			}
			if listen == "" {
				listen = net.JoinHostPort(s.DNS.Address, "53")
			}
			reg := prometheus.NewRegistry()
			srv := dns.New(dns.ZoneFromSpec(s), dns.Options{
				Upstreams: s.DNS.Forwarders, Allow: []netip.Prefix{netip.MustParsePrefix(s.Fabric.CIDR)},
				CacheSize: s.DNS.CacheSize, Log: log, Registry: reg,
			})
			serveMetrics(metrics, reg, log)
			ctx, stop := signalContext()
			defer stop()
			go spec.Watch(ctx, specPath, 2*time.Second, log, func(s *spec.Spec) { srv.SetZone(dns.ZoneFromSpec(s)) })
			// Several UDP sockets (SO_REUSEPORT): the kernel spreads
			// queries over them and each has its own read loop.
			tcp := &mdns.Server{Addr: listen, Net: "tcp", Handler: srv}
			errs := make(chan error, 1+runtime.NumCPU())
			go func() { errs <- tcp.ListenAndServe() }()
			var conns []*net.UDPConn
			for i := 0; i < udpSockets; i++ {
				pc, err := reusePortUDP(ctx, listen)
				if err != nil {
					return err
				}
				conns = append(conns, pc)
				go func() { errs <- srv.ServeUDP(pc) }()
			}
			log.Info("serving", "listen", listen, "forwarders", s.DNS.Forwarders, "udp_sockets", len(conns))
			select {
			case <-ctx.Done():
				for _, c := range conns {
					c.Close()
				}
				return tcp.Shutdown()
			case err := <-errs:
				return err
			}
		},
	}
	c.Flags().StringVar(&specPath, "spec", "", "fabric spec (required)")
	c.Flags().StringVar(&listen, "listen", "", "address to serve on (default: the spec's dns.address, port 53)")
	// Half the CPUs: each loop batches, and clients on the same host
	// (the lab, the benchmark) need CPU too.
	c.Flags().IntVar(&udpSockets, "udp-sockets", max(1, runtime.NumCPU()/2), "UDP sockets (SO_REUSEPORT), each with its own read loop")
	c.Flags().StringVar(&metrics, "metrics", "", "serve Prometheus metrics on this address")
	_ = c.MarkFlagRequired("spec")
	return c
}

func reusePortUDP(ctx context.Context, addr string) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) })
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(ctx, "udp4", addr)
	if err != nil {
		return nil, err
	}
	sockbuf.Receive(pc.(*net.UDPConn), sockbuf.Burst)
	return pc.(*net.UDPConn), nil
}
