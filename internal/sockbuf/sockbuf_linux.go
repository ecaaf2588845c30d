// Package sockbuf sizes a socket's receive buffer past the host's default
// cap, for servers that take bursts of datagrams.
package sockbuf

import (
	"net"

	"golang.org/x/sys/unix"
)

// Burst is the receive buffer of bothnia's DHCP and DNS servers and of
// the load generators that measure them. The kernel's default (about
// 200 KiB, some 600 small datagrams) overflowed by thousands per benchmark
// step at thousands of requests per second whenever the server waited for
// a CPU, though it used well under a core.
const Burst = 4 << 20

// Receive gives conn a receive buffer of n bytes. SO_RCVBUFFORCE passes
// net.core.rmem_max (it needs CAP_NET_ADMIN, which the servers have as
// root); without it the buffer is as large as rmem_max allows, which
// still serves, with less room for bursts. It reports whether n was set.
func Receive(conn *net.UDPConn, n int) bool {
	rc, err := conn.SyscallConn()
	if err != nil {
		return false
	}
	forced := false
	_ = rc.Control(func(fd uintptr) {
		forced = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n) == nil
	})
	if !forced {
		_ = conn.SetReadBuffer(n)
	}
	return forced
}
