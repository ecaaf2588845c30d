package sockbuf

import (
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func TestReceivePassesTheDefaultCap(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SO_RCVBUFFORCE needs root")
	}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const n = 4 << 20
	if !Receive(conn, n) {
		t.Fatal("SO_RCVBUFFORCE refused to root")
	}
	rc, _ := conn.SyscallConn()
	var got int
	_ = rc.Control(func(fd uintptr) { got, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF) })
	if got < n { // the kernel doubles what it is given, for its bookkeeping
		t.Fatalf("receive buffer %d bytes, want at least %d", got, n)
	}
}
