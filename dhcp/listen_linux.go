package dhcp

import (
	"context"
	"net"

	"github.com/insomniacslk/dhcp/dhcpv4/server4"
)

// ListenAndServe answers on UDP port 67 of iface (all interfaces if
// empty) until ctx ends. The socket is bound to the device, so that a
// server in a namespace with several legs answers on its own only.
func (s *Server) ListenAndServe(ctx context.Context, iface string) error {
	conn, err := server4.NewIPv4UDPConn(iface, &net.UDPAddr{Port: 67})
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	return s.Serve(conn)
}
