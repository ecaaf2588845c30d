package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/bothnia/bothnia/namespace"
)

// Renewal is how a VM's lease was renewed.
type Renewal struct {
	Server  string        // the server that acknowledged it
	Rebound bool          // the lease's own server did not answer: another did (REBINDING)
	Took    time.Duration // from the first request to the acknowledgement
}

// Renew renews a DHCP VM's lease as its client does (RFC 2131 4.4.5),
// with the client's timers shortened to wait seconds: a REQUEST unicast to
// the server the lease came from (RENEWING); if that server does not
// answer within wait, the same REQUEST broadcast (REBINDING), which any of
// the site's servers may acknowledge. The VM keeps its address throughout.
func (l *Lab) Renew(ctx context.Context, vm string, wait time.Duration) (Renewal, error) {
	lease, err := readLease(l.LeaseFile(vm))
	if err != nil {
		return Renewal{}, err
	}
	ip, server := net.ParseIP(lease["ip"]).To4(), net.ParseIP(lease["serverid"]).To4()
	if ip == nil || server == nil {
		return Renewal{}, fmt.Errorf("lab: %s's lease has no address or server: %v", vm, lease)
	}
	var conn net.PacketConn
	var mac net.HardwareAddr
	err = namespace.Do(l.VMNS(vm), func() error {
		ifi, err := net.InterfaceByName(VMDev)
		if err != nil {
			return err
		}
		mac = ifi.HardwareAddr
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_BROADCAST, 1)
			})
			return errors.Join(err, serr)
		}}
		conn, err = lc.ListenPacket(ctx, "udp4", net.JoinHostPort(ip.String(), "68"))
		return err
	})
	if err != nil {
		return Renewal{}, fmt.Errorf("lab: renew %s: %w", vm, err)
	}
	defer conn.Close()
	req, err := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithHwAddr(mac), dhcpv4.WithClientIP(ip))
	if err != nil {
		return Renewal{}, err
	}
	start := time.Now()
	for _, to := range []net.IP{server, net.IPv4bcast} {
		if _, err := conn.WriteTo(req.ToBytes(), &net.UDPAddr{IP: to, Port: dhcpv4.ServerPort}); err != nil {
			return Renewal{}, fmt.Errorf("lab: renew %s: send to %s: %w", vm, to, err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(wait))
		buf := make([]byte, 1500)
		for {
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				break // no answer within wait
			}
			resp, err := dhcpv4.FromBytes(buf[:n])
			if err != nil || resp.TransactionID != req.TransactionID {
				continue
			}
			if resp.MessageType() != dhcpv4.MessageTypeAck {
				return Renewal{}, fmt.Errorf("lab: renew %s: %s answered %s", vm, resp.ServerIdentifier(), resp.MessageType())
			}
			return Renewal{Server: resp.ServerIdentifier().String(), Rebound: !to.Equal(server), Took: time.Since(start)}, nil
		}
	}
	return Renewal{}, fmt.Errorf("lab: renew %s: no server answered, neither %s (renewing) nor any (rebinding)", vm, server)
}

func readLease(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		out[k] = strings.TrimSpace(v)
	}
	return out, sc.Err()
}
