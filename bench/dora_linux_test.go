package bench

import (
	"net"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// The generator's templates are DHCP messages a real parser reads as
// meant, and it reads a real server's replies.
func TestDORAMessages(t *testing.T) {
	g := &doraGen{relay: [4]byte{10, 77, 255, 254}, base: net.HardwareAddr{0, 0x0c, 1, 0, 0, 0}, clients: 10000}
	d, err := dhcpv4.FromBytes(g.message(10003, 1, nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	if d.MessageType() != dhcpv4.MessageTypeDiscover || d.TransactionID != [4]byte{0, 0, 0x27, 0x13} ||
		d.ClientHWAddr.String() != "00:0c:01:00:00:03" || !d.GatewayIPAddr.Equal(net.IPv4(10, 77, 255, 254)) || d.HopCount != 1 {
		t.Fatalf("DISCOVER parsed as %s", d.Summary())
	}
	r, err := dhcpv4.FromBytes(g.message(7, 3, []byte{10, 77, 0, 17}, []byte{10, 77, 0, 1}))
	if err != nil {
		t.Fatal(err)
	}
	if r.MessageType() != dhcpv4.MessageTypeRequest || !r.RequestedIPAddress().Equal(net.IPv4(10, 77, 0, 17)) ||
		!r.ServerIdentifier().Equal(net.IPv4(10, 77, 0, 1)) {
		t.Fatalf("REQUEST parsed as %s", r.Summary())
	}

	offer, err := dhcpv4.NewReplyFromRequest(d, dhcpv4.WithMessageType(dhcpv4.MessageTypeOffer),
		dhcpv4.WithYourIP(net.IPv4(10, 77, 0, 17)), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 77, 0, 1))))
	if err != nil {
		t.Fatal(err)
	}
	xid, typ, sid, ok := parseReply(offer.ToBytes())
	if !ok || xid != 10003 || typ != 2 || net.IP(sid).String() != "10.77.0.1" {
		t.Fatalf("OFFER read as xid %d type %d server %v ok %v", xid, typ, sid, ok)
	}
	if _, _, _, ok := parseReply(g.message(1, 1, nil, nil)); ok {
		t.Fatal("a request was read as a reply")
	}
}
