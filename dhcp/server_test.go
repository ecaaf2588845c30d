package dhcp

import (
	"net"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/bothnia/bothnia/spec"
)

func server(t *testing.T, site string) (*Server, *Config) {
	t.Helper()
	s, err := spec.Load("../examples/knox-epouta.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := ConfigFromSpec(s, site)
	if err != nil {
		t.Fatal(err)
	}
	return New(c, nil, nil), c
}

func mac(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }

func discover(t *testing.T, hw string) *dhcpv4.DHCPv4 {
	d, err := dhcpv4.NewDiscovery(mac(hw))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

const knoxVM1 = "fa:16:3e:80:00:0a" // 10.101.128.10 on knox-c1

func TestDORA(t *testing.T) {
	srv, _ := server(t, "knox")
	offer := srv.Handle(discover(t, knoxVM1))
	if offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("no offer: %v", offer)
	}
	checks := map[string]bool{
		"yiaddr":      offer.YourIPAddr.Equal(net.ParseIP("10.101.128.10")),
		"mask /16":    offer.SubnetMask().String() == net.CIDRMask(16, 32).String(),
		"router":      len(offer.Router()) == 1 && offer.Router()[0].Equal(net.ParseIP("10.101.0.1")),
		"dns":         len(offer.DNS()) == 1 && offer.DNS()[0].Equal(net.ParseIP("10.101.128.0")),
		"domain":      offer.DomainName() == "mosler.internal",
		"search":      offer.DomainSearch() != nil && len(offer.DomainSearch().Labels) == 1 && offer.DomainSearch().Labels[0] == "mosler.internal",
		"hostname":    offer.HostName() == "knox-vm1",
		"lease":       offer.IPAddressLeaseTime(0) == 24*time.Hour,
		"server id":   offer.ServerIdentifier().Equal(net.ParseIP("10.101.128.0")),
		"mtu 1500":    len(offer.GetOneOption(dhcpv4.OptionInterfaceMTU)) == 2 && int(offer.GetOneOption(dhcpv4.OptionInterfaceMTU)[0])<<8|int(offer.GetOneOption(dhcpv4.OptionInterfaceMTU)[1]) == 1500,
		"121 present": len(offer.ClasslessStaticRoute()) == 2,
	}
	for name, ok := range checks {
		if !ok {
			t.Errorf("offer: %s wrong:\n%s", name, offer.Summary())
		}
	}
	req, err := dhcpv4.NewRequestFromOffer(offer)
	if err != nil {
		t.Fatal(err)
	}
	ack := srv.Handle(req)
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck || !ack.YourIPAddr.Equal(net.ParseIP("10.101.128.10")) {
		t.Fatalf("want ACK for 10.101.128.10, got %v", ack)
	}
	// Renew: unicast with ciaddr, no requested-address option.
	renew, _ := dhcpv4.NewRenewFromAck(ack)
	if r := srv.Handle(renew); r == nil || r.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("renew: %v", r)
	}
	if dst := destination(renew, srv.Handle(renew)); !dst.IP.Equal(net.ParseIP("10.101.128.10")) || dst.Port != 68 {
		t.Errorf("a renew is answered by unicast to the client, got %v", dst)
	}
}

func TestWrongAddressIsNAKed(t *testing.T) {
	srv, _ := server(t, "knox")
	req, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac(knoxVM1)), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.101.128.99"))))
	resp := srv.Handle(req)
	if resp == nil || resp.MessageType() != dhcpv4.MessageTypeNak {
		t.Fatalf("want NAK, got %v", resp)
	}
	if dst := destination(req, resp); !dst.IP.Equal(net.IPv4bcast) {
		t.Errorf("NAK goes to broadcast, got %v", dst)
	}
}

func TestSilence(t *testing.T) {
	srv, _ := server(t, "knox")
	epoutaVM := "fa:16:3e:00:00:0a"
	if r := srv.Handle(discover(t, epoutaVM)); r != nil {
		t.Errorf("knox answered an ePouta VM: %v", r.Summary())
	}
	if r := srv.Handle(discover(t, "02:00:00:00:00:99")); r != nil {
		t.Errorf("knox answered an unknown MAC")
	}
	// A request to another server (SELECTING with its server id).
	req, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac(knoxVM1)), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP("10.101.0.3"))),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.101.128.10"))))
	if r := srv.Handle(req); r != nil {
		t.Errorf("answered a request for another server")
	}
	for _, mt := range []dhcpv4.MessageType{dhcpv4.MessageTypeRelease, dhcpv4.MessageTypeDecline} {
		m, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac(knoxVM1)), dhcpv4.WithMessageType(mt))
		if r := srv.Handle(m); r != nil {
			t.Errorf("%s got a reply", mt)
		}
	}
	if got := testutil.ToFloat64(srv.m.Ignored.WithLabelValues("other-site")); got != 1 {
		t.Errorf("other-site ignored %v, want 1", got)
	}
	if got := testutil.ToFloat64(srv.m.Requests.WithLabelValues("RELEASE")); got != 1 {
		t.Errorf("releases counted %v, want 1", got)
	}
	if got := testutil.ToFloat64(srv.m.Requests.WithLabelValues("DECLINE")); got != 1 {
		t.Errorf("declines counted %v, want 1", got)
	}
	// The ePouta server answers the ePouta VM.
	ep, _ := server(t, "epouta")
	if r := ep.Handle(discover(t, epoutaVM)); r == nil || !r.YourIPAddr.Equal(net.ParseIP("10.101.0.10")) || !r.ServerIdentifier().Equal(net.ParseIP("10.101.0.3")) {
		t.Errorf("epouta offer: %v", r)
	}
}

func TestInform(t *testing.T) {
	srv, _ := server(t, "knox")
	inf, _ := dhcpv4.NewInform(mac(knoxVM1), net.ParseIP("10.101.128.10"))
	r := srv.Handle(inf)
	if r == nil || r.MessageType() != dhcpv4.MessageTypeAck || !r.YourIPAddr.Equal(net.IPv4zero) || r.GetOneOption(dhcpv4.OptionIPAddressLeaseTime) != nil {
		t.Fatalf("INFORM answer must be an ACK without address or lease: %v", r)
	}
	if len(r.DNS()) != 1 {
		t.Errorf("INFORM answer lacks DNS")
	}
}

func TestMalformedIsCounted(t *testing.T) {
	srv, _ := server(t, "knox")
	if resp, _ := srv.HandlePacket([]byte{1, 2, 3}, nil); resp != nil {
		t.Fatal("answered garbage")
	}
	if got := testutil.ToFloat64(srv.m.Malformed); got != 1 {
		t.Fatalf("malformed %v, want 1", got)
	}
}

func TestConfigFollowsSpecChanges(t *testing.T) {
	srv, _ := server(t, "knox")
	s, _ := spec.Load("../examples/knox-epouta.yaml")
	s.Networks[0].VMs = append(s.Networks[0].VMs, &spec.VM{Name: "knox-vm9", Node: "knox-c1", IP: "10.101.128.99", MAC: "fa:16:3e:80:00:99"})
	c, err := ConfigFromSpec(s, "knox")
	if err != nil {
		t.Fatal(err)
	}
	srv.SetConfig(c)
	if r := srv.Handle(discover(t, "fa:16:3e:80:00:99")); r == nil || !r.YourIPAddr.Equal(net.ParseIP("10.101.128.99")) {
		t.Fatalf("new VM not served after SetConfig: %v", r)
	}
}

// FuzzHandlePacket: whatever arrives, the server neither panics nor
// answers with something it cannot parse back.
func FuzzHandlePacket(f *testing.F) {
	s, _ := spec.Load("../examples/knox-epouta.yaml")
	c, _ := ConfigFromSpec(s, "knox")
	srv := New(c, nil, nil)
	d, _ := dhcpv4.NewDiscovery(mac(knoxVM1))
	f.Add(d.ToBytes())
	r, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac(knoxVM1)), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.101.128.10"))))
	f.Add(r.ToBytes())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		resp, dst := srv.HandlePacket(b, nil)
		if resp == nil {
			return
		}
		if dst == nil {
			t.Fatal("a reply without a destination")
		}
		if _, err := dhcpv4.FromBytes(resp); err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
	})
}
