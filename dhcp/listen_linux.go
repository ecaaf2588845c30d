package dhcp

import (
	"context"
	"net"

	"github.com/bothnia/bothnia/internal/sockbuf"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
)

// Listen opens the server's socket on UDP port 67 of iface (all
// interfaces if empty), bound to the device, so that a server in a
// namespace with several legs answers on its own only, and with room for
// bursts (sockbuf.Burst).
func Listen(iface string) (*net.UDPConn, error) {
	conn, err := server4.NewIPv4UDPConn(iface, &net.UDPAddr{Port: 67})
	if err != nil {
		return nil, err
	}
	sockbuf.Receive(conn, sockbuf.Burst)
	return conn, nil
}

// ListenAndServe answers on iface (see Listen) until ctx ends.
func (s *Server) ListenAndServe(ctx context.Context, iface string) error {
	conn, err := Listen(iface)
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	return s.Serve(conn)
}
