package bench

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bothnia/bothnia/dhcp"
	"github.com/bothnia/bothnia/internal/logbuf"
	"github.com/bothnia/bothnia/namespace"
)

// dhcpClients is how many distinct clients perfdhcp plays; both servers
// get a fixed lease for each, so their MACs are the base MAC plus 0..n-1.
// Not more: dnsmasq reads a hosts file of 60,000 lines for longer than
// 30 s before it answers at all; 10,000 take it about a second.
const dhcpClients = 10000

// dhcpRates are the offered DORA rates the search steps through; 11,700
// is Kea's published figure.
var dhcpRates = []int{1000, 2000, 4000, 8000, 11700, 16000, 24000, 32000, 48000}

// DHCP raises the DORA rate Kea's perfdhcp offers, for bothnia and then
// for dnsmasq on the same namespaces, until each drops more than 1%, and
// prints every step and each server's highest rate within 1%. Both serve
// the same dhcpClients fixed hosts; bothnia logs as it does in production
// (every lease, at info level, to a file).
func DHCP(w io.Writer, prefix string, rates []int, secs int, generator string) error {
	gen, ok := dhcpGenerators[generator]
	if !ok {
		return fmt.Errorf("bench: no DHCP load generator %q; use bothnia (batched, of this binary) or perfdhcp (Kea's)", generator)
	}
	if len(rates) == 0 {
		rates = dhcpRates
	}
	srv, cli, cleanup, err := pair(prefix, "10.77.0.1/16", "10.77.255.254/16")
	if err != nil {
		return err
	}
	defer cleanup()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// dnsmasq drops its privileges before it reads the hosts file.
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}

	cfg := &dhcp.Config{Site: "bench", ServerIP: netip.MustParseAddr("10.77.0.1"), Mask: net.CIDRMask(16, 32),
		LeaseTime: 12 * time.Hour, MTU: 1450, Hosts: map[string]dhcp.Host{}, Others: map[string]bool{}}
	var hosts strings.Builder
	ip := netip.MustParseAddr("10.77.0.10")
	for i := 0; i < dhcpClients; i++ {
		mac := net.HardwareAddr{0x00, 0x0c, 0x01, byte(i >> 16), byte(i >> 8), byte(i)}
		cfg.Hosts[mac.String()] = dhcp.Host{IP: ip, Hostname: fmt.Sprintf("vm%d", i)}
		fmt.Fprintf(&hosts, "%s,%s,vm%d\n", mac, ip, i)
		ip = ip.Next()
	}
	logFile, err := os.Create(filepath.Join(dir, "bothnia-dhcp.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	// As bothnia dhcp logs: every lease, through the same buffer.
	logw := logbuf.New(logFile, 200*time.Millisecond)
	defer logw.Close()
	log := slog.New(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: slog.LevelInfo})).With("service", "dhcp", "site", "bench")
	server := dhcp.New(cfg, log, dhcp.NewMetrics(prometheus.NewRegistry()))
	var conn *net.UDPConn
	// The socket is made inside the server namespace; the server never
	// opens another, so it can run in this process.
	if err := namespace.Do(srv, func() error {
		var err error
		conn, err = dhcp.Listen("ds0")
		return err
	}); err != nil {
		return err
	}
	go func() { _ = server.Serve(conn) }()
	fmt.Fprintln(w, "rate search (each step one run of the load generator):")
	fmt.Fprintf(w, "load generator: %s\n", generator)
	bothnia, err := dhcpSearch(w, "bothnia", srv, cli, 0, rates, secs, gen)
	conn.Close()
	if err != nil {
		return err
	}

	hostsFile := filepath.Join(dir, "hosts")
	if err := os.WriteFile(hostsFile, []byte(hosts.String()), 0o644); err != nil {
		return err
	}
	pid := filepath.Join(dir, "dnsmasq.pid")
	dm := exec.Command("ip", "netns", "exec", srv, "dnsmasq", "--port=0", "--interface=ds0", "--bind-interfaces",
		"--dhcp-range=10.77.0.0,static,255.255.0.0,12h", "--dhcp-hostsfile="+hostsFile, "--dhcp-lease-max=200000",
		"--leasefile-ro", "--no-ping", "--quiet-dhcp", "--log-facility="+filepath.Join(dir, "dnsmasq.log"), "--pid-file="+pid)
	if out, err := dm.CombinedOutput(); err != nil {
		return fmt.Errorf("bench: dnsmasq: %w: %s", err, out)
	}
	defer killPidFile(pid)
	// dnsmasq reads its hosts file after it forks: wait until it offers.
	for i := 0; ; i++ {
		if _, err := gen(cli, 100, 1, nil); err == nil {
			break
		} else if i == 20 {
			b, _ := os.ReadFile(filepath.Join(dir, "dnsmasq.log"))
			return fmt.Errorf("bench: dnsmasq never offered a lease: %w\ndnsmasq's log:\n%s", err, b)
		}
	}
	dnsmasq, err := dhcpSearch(w, "dnsmasq", srv, cli, pidFrom(pid), rates, secs, gen)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "DHCP DORA: the highest offered rate with at most 1%% of exchanges unanswered (%s, %d s per step, %d fixed hosts)\n", generator, secs, dhcpClients)
	fmt.Fprintf(w, "%-8s %10s %12s %8s\n", "server", "offered/s", "acks/s", "dropped")
	for _, x := range []struct {
		name string
		p    perf
	}{{"bothnia", bothnia}, {"dnsmasq", dnsmasq}} {
		if x.p.rate == 0 {
			fmt.Fprintf(w, "%-8s %10s %12s %8s  (more than 1%% dropped already at %d/s)\n", x.name, "-", "-", "-", rates[0])
			continue
		}
		fmt.Fprintf(w, "%-8s %10d %12.0f %7.3f%%\n", x.name, x.p.rate, x.p.acks, x.p.dropPct)
	}
	if dnsmasq.acks > 0 && bothnia.acks > 0 {
		fmt.Fprintf(w, "%-8s %10s %11.2fx\n", "ratio", "", bothnia.acks/dnsmasq.acks)
	}
	if bothnia.rate == rates[len(rates)-1] {
		fmt.Fprintln(w, "bothnia kept up with the highest rate the search offers: its figure is a lower bound")
	}
	return nil
}

// dhcpSearch steps through the rates until the server drops more than 1%,
// and returns the last step within 1% (zero if even the first was not).
func dhcpSearch(w io.Writer, name, srv, cli string, pid int, rates []int, secs int, gen dhcpGenerator) (perf, error) {
	var best perf
	for _, r := range rates {
		ld := startLoad(srv, cli, pid)
		p, err := gen(cli, r, secs, ld)
		if err != nil {
			return best, err
		}
		fmt.Fprintf(w, "  %-8s offered %6d/s  acks %8.0f/s  dropped %7.3f%%\n", name, r, p.acks, p.dropPct)
		fmt.Fprintf(w, "           %s\n", ld)
		if ld.generatorBound() {
			fmt.Fprintf(w, "           the load generator used a whole core: this step measured it, not the server\n")
		}
		if p.dropPct > 1 {
			break
		}
		best = p
	}
	return best, nil
}

type perf struct {
	rate         int
	offers, acks float64
	dropPct      float64 // exchanges begun (DISCOVERs) never acknowledged
}

// A dhcpGenerator offers rate DORA exchanges per second for secs from the
// client namespace; ld (nil: none) is closed when it ends.
type dhcpGenerator func(cli string, rate, secs int, ld *load) (perf, error)

var dhcpGenerators = map[string]dhcpGenerator{"bothnia": doraGenerator, "perfdhcp": perfdhcp}

// doraGenerator runs DORA in a process of its own in the client namespace.
func doraGenerator(cli string, rate, secs int, ld *load) (perf, error) {
	var r DORAResult
	if err := runGenerator(cli, secs, ld, &r, "dora",
		"--relay", "10.77.255.254", "--server", "10.77.0.1", "--base-mac", "00:0c:01:00:00:00",
		"--clients", strconv.Itoa(dhcpClients), "--rate", strconv.Itoa(rate)); err != nil {
		return perf{}, fmt.Errorf("bench: the DORA generator at %d/s: %w", rate, err)
	}
	if r.Offers == 0 {
		return perf{}, fmt.Errorf("bench: the DORA generator at %d/s got no offers", rate)
	}
	p := perf{rate: rate, offers: float64(r.Offers) / r.Seconds, acks: float64(r.Acks) / r.Seconds}
	if r.Discovers > 0 {
		p.dropPct = 100 * float64(r.Discovers-r.Acks) / float64(r.Discovers)
	}
	return p, nil
}

var (
	statsRE = regexp.MustCompile(`Statistics for: ([A-Z-]+)`)
	rxRE    = regexp.MustCompile(`received packets: (\d+)`)
	txRE    = regexp.MustCompile(`sent packets: (\d+)`)
)

// perfdhcp runs one step; ld (nil: none) is closed when perfdhcp ends.
func perfdhcp(cli string, rate, secs int, ld *load) (perf, error) {
	cmd := exec.Command("ip", "netns", "exec", cli, "timeout", strconv.Itoa(secs+20), "perfdhcp", "-4", "-l", "dc0",
		"-r", strconv.Itoa(rate), "-R", strconv.Itoa(dhcpClients), "-p", strconv.Itoa(secs), "-b", "mac=00:0c:01:00:00:00")
	out, _ := cmd.CombinedOutput() // perfdhcp exits non-zero when it saw drops
	if ld != nil {
		ld.done(cmd)
	}
	p := perf{rate: rate}
	var discovers float64
	section := ""
	for _, line := range strings.Split(string(out), "\n") {
		if m := statsRE.FindStringSubmatch(line); m != nil {
			section = m[1]
		}
		if m := txRE.FindStringSubmatch(line); m != nil && section == "DISCOVER-OFFER" {
			discovers, _ = strconv.ParseFloat(m[1], 64)
		}
		if m := rxRE.FindStringSubmatch(line); m != nil {
			n, _ := strconv.ParseFloat(m[1], 64)
			switch section {
			case "DISCOVER-OFFER":
				p.offers = n / float64(secs)
			case "REQUEST-ACK":
				p.acks = n / float64(secs)
			}
		}
	}
	if discovers > 0 {
		p.dropPct = 100 * (1 - p.acks*float64(secs)/discovers)
	}
	if p.offers == 0 {
		return p, fmt.Errorf("bench: perfdhcp at %d/s got no offers:\n%s", rate, out)
	}
	return p, nil
}

// pidFrom reads a pid file; 0 (this process) if it cannot.
func pidFrom(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

func killPidFile(path string) {
	if pid := pidFrom(path); pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	_ = os.Remove(path)
}
