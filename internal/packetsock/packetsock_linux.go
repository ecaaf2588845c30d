// Package packetsock opens the raw Ethernet sockets that kernel tests
// send and capture frames with, on a device inside a namespace.
package packetsock

import (
	"encoding/binary"
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bothnia/bothnia/namespace"
)

// Htons is v in network byte order, as AF_PACKET wants its protocol.
func Htons(v uint16) uint16 { return v<<8 | v>>8 }

// Open returns an AF_PACKET socket in namespace ns, bound to dev for
// proto (an ETH_P_ value), and dev's index. A timeout other than 0 ends
// each receive after it, so a reader can poll a stop flag (closing a
// socket does not wake a blocked receive).
func Open(ns, dev string, proto uint16, timeout time.Duration) (fd, ifindex int, err error) {
	err = namespace.Do(ns, func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		ifindex = ifi.Index
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(Htons(proto)))
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: Htons(proto), Ifindex: ifindex}); err != nil {
			unix.Close(fd)
			return err
		}
		return nil
	})
	if err != nil {
		return -1, 0, fmt.Errorf("packetsock: %s in namespace %s: %w", dev, ns, err)
	}
	if timeout > 0 {
		tv := unix.NsecToTimeval(timeout.Nanoseconds())
		_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	}
	return fd, ifindex, nil
}

// Send writes whole frames (Ethernet header included) on dev in ns.
func Send(ns, dev string, frames ...[]byte) error {
	err := namespace.Do(ns, func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		for _, f := range frames {
			if err := unix.Sendto(fd, f, 0, &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("packetsock: send on %s in namespace %s: %w", dev, ns, err)
	}
	return nil
}

// ARPRequest is a broadcast ARP request from sha, claiming spa, asking
// for tpa.
func ARPRequest(sha net.HardwareAddr, spa, tpa string) []byte {
	f := make([]byte, 42)
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:12], sha)
	binary.BigEndian.PutUint16(f[12:], unix.ETH_P_ARP)
	binary.BigEndian.PutUint16(f[14:], 1)      // Ethernet
	binary.BigEndian.PutUint16(f[16:], 0x0800) // IPv4
	f[18], f[19] = 6, 4
	binary.BigEndian.PutUint16(f[20:], 1) // request
	copy(f[22:28], sha)
	copy(f[28:32], net.ParseIP(spa).To4())
	copy(f[38:42], net.ParseIP(tpa).To4())
	return f
}
