package bench

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4/server4"

	"github.com/bothnia/bothnia/dhcp"
	"github.com/bothnia/bothnia/namespace"
)

// dhcpClients is how many distinct clients perfdhcp plays; bothnia needs a
// fixed lease for each, so their MACs are the base MAC plus 0..n-1.
const dhcpClients = 60000

// DHCP measures DORA exchanges per second at each offered rate, for
// bothnia and for dnsmasq, with Kea's perfdhcp as the load, one after the
// other on the same namespaces.
func DHCP(w io.Writer, prefix string, rates []int, secs int) error {
	srv, cli, cleanup, err := pair(prefix, "10.77.0.1/16", "10.77.255.254/16")
	if err != nil {
		return err
	}
	defer cleanup()

	cfg := &dhcp.Config{Site: "bench", ServerIP: netip.MustParseAddr("10.77.0.1"), Mask: net.CIDRMask(16, 32),
		LeaseTime: 12 * time.Hour, MTU: 1450, Hosts: map[string]dhcp.Host{}, Others: map[string]bool{}}
	ip := netip.MustParseAddr("10.77.0.10")
	for i := 0; i < dhcpClients; i++ {
		mac := net.HardwareAddr{0x00, 0x0c, 0x01, byte(i >> 16), byte(i >> 8), byte(i)}
		cfg.Hosts[mac.String()] = dhcp.Host{IP: ip, Hostname: fmt.Sprintf("vm%d", i)}
		ip = ip.Next()
	}
	server := dhcp.New(cfg, nil, nil)
	var conn *net.UDPConn
	// The socket is made inside the server namespace; the server never
	// opens another, so it can run in this process.
	if err := namespace.Do(srv, func() error {
		var err error
		conn, err = server4.NewIPv4UDPConn("ds0", &net.UDPAddr{Port: 67})
		return err
	}); err != nil {
		return err
	}
	go func() { _ = server.Serve(conn) }()
	bothnia := map[int]perf{}
	for _, r := range rates {
		if bothnia[r], err = perfdhcp(cli, r, secs); err != nil {
			conn.Close()
			return err
		}
	}
	conn.Close()

	pid := fmt.Sprintf("/tmp/%s-dnsmasq.pid", prefix)
	dm := exec.Command("ip", "netns", "exec", srv, "dnsmasq", "--port=0", "--interface=ds0", "--bind-interfaces",
		"--dhcp-range=10.77.0.10,10.77.250.0,12h", "--dhcp-lease-max=200000", "--leasefile-ro", "--no-ping",
		"--quiet-dhcp", "--log-facility=/dev/null", "--pid-file="+pid)
	if out, err := dm.CombinedOutput(); err != nil {
		return fmt.Errorf("bench: dnsmasq: %w: %s", err, out)
	}
	defer killPidFile(pid)
	time.Sleep(500 * time.Millisecond)
	dnsmasq := map[int]perf{}
	for _, r := range rates {
		if dnsmasq[r], err = perfdhcp(cli, r, secs); err != nil {
			return err
		}
	}
	fmt.Fprintf(w, "DHCP DORA (perfdhcp, %d s per rate, %d clients)\n", secs, dhcpClients)
	fmt.Fprintf(w, "%-8s %22s %22s %8s\n", "rate/s", "bothnia acks/s (drop)", "dnsmasq acks/s (drop)", "ratio")
	for _, r := range rates {
		b, d := bothnia[r], dnsmasq[r]
		ratio := 0.0
		if d.acks > 0 {
			ratio = b.acks / d.acks
		}
		fmt.Fprintf(w, "%-8d %14.0f (%5s) %14.0f (%5s) %7.2fx\n", r, b.acks, b.drops, d.acks, d.drops, ratio)
	}
	return nil
}

type perf struct {
	offers, acks float64
	drops        string
}

var (
	statsRE = regexp.MustCompile(`Statistics for: ([A-Z-]+)`)
	rxRE    = regexp.MustCompile(`received packets: (\d+)`)
	dropRE  = regexp.MustCompile(`drops ratio: ([\d.]+ ?%)`)
)

func perfdhcp(cli string, rate, secs int) (perf, error) {
	cmd := exec.Command("ip", "netns", "exec", cli, "timeout", strconv.Itoa(secs+20), "perfdhcp", "-4", "-l", "dc0",
		"-r", strconv.Itoa(rate), "-R", strconv.Itoa(dhcpClients), "-p", strconv.Itoa(secs), "-b", "mac=00:0c:01:00:00:00")
	out, _ := cmd.CombinedOutput() // perfdhcp exits non-zero when it saw drops
	var p perf
	section := ""
	for _, line := range strings.Split(string(out), "\n") {
		if m := statsRE.FindStringSubmatch(line); m != nil {
			section = m[1]
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
		if m := dropRE.FindStringSubmatch(line); m != nil && section == "REQUEST-ACK" {
			p.drops = strings.ReplaceAll(m[1], " ", "")
		}
	}
	if p.offers == 0 {
		return p, fmt.Errorf("bench: perfdhcp at %d/s got no offers:\n%s", rate, out)
	}
	return p, nil
}

func killPidFile(path string) {
	b, err := os.ReadFile(path)
	if err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			_ = syscall.Kill(pid, syscall.SIGTERM)
		}
	}
	_ = os.Remove(path)
}
