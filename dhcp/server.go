package dhcp

import (
	"errors"
	"log/slog"
	"maps"
	"net"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/prometheus/client_golang/prometheus"
)

// Server answers DHCPv4 for one site. Its configuration can be swapped at
// any time (SetConfig); requests in flight see the old or the new one.
type Server struct {
	cfg atomic.Pointer[prepared]
	log *slog.Logger
	m   *Metrics
}

// prepared is a configuration with the options every reply of a kind
// carries, encoded once: building them per reply was a fifth of the
// server's time at thousands of leases per second.
type prepared struct {
	*Config
	lease  dhcpv4.Options // OFFER and ACK: the network's options and the lease times
	inform dhcpv4.Options // ACK to an INFORM: the network's options only
}

func prepare(c *Config) *prepared {
	p := &prepared{Config: c}
	opts := func(mods []dhcpv4.Modifier) dhcpv4.Options {
		d := &dhcpv4.DHCPv4{Options: dhcpv4.Options{}}
		for _, m := range mods {
			m(d)
		}
		return d.Options
	}
	p.inform = opts(networkOptions(c))
	p.lease = opts(append(networkOptions(c),
		dhcpv4.WithLeaseTime(uint32(c.LeaseTime/time.Second)),
		dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(c.LeaseTime/2)),
		dhcpv4.WithOption(dhcpv4.OptRebindingTimeValue(c.LeaseTime*7/8))))
	return p
}

// Metrics are the server's Prometheus counters.
type Metrics struct {
	Requests  *prometheus.CounterVec // by message type
	Replies   *prometheus.CounterVec // by message type
	Ignored   *prometheus.CounterVec // by reason: other-site, unknown, not-for-us
	Malformed prometheus.Counter
}

// NewMetrics registers the counters with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Requests:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bothnia_dhcp_requests_total", Help: "DHCP messages received, by type."}, []string{"type"}),
		Replies:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bothnia_dhcp_replies_total", Help: "DHCP replies sent, by type."}, []string{"type"}),
		Ignored:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bothnia_dhcp_ignored_total", Help: "DHCP messages left unanswered, by reason."}, []string{"reason"}),
		Malformed: prometheus.NewCounter(prometheus.CounterOpts{Name: "bothnia_dhcp_malformed_total", Help: "Packets that are not DHCP messages."}),
	}
	if reg != nil {
		reg.MustRegister(m.Requests, m.Replies, m.Ignored, m.Malformed)
	}
	return m
}

// New returns a server for the configuration.
func New(c *Config, log *slog.Logger, m *Metrics) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	s := &Server{log: log, m: m}
	s.cfg.Store(prepare(c))
	return s
}

// SetConfig replaces the configuration, e.g. when a VM is added.
func (s *Server) SetConfig(c *Config) { s.cfg.Store(prepare(c)) }

// Handle answers one request, or returns nil to stay silent: for MACs of
// other sites and unknown MACs, requests meant for another server,
// RELEASE and DECLINE.
func (s *Server) Handle(req *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	c := s.cfg.Load()
	mt := req.MessageType()
	s.m.Requests.WithLabelValues(mt.String()).Inc()
	if req.OpCode != dhcpv4.OpcodeBootRequest {
		s.m.Ignored.WithLabelValues("not-a-request").Inc()
		return nil
	}
	mac := req.ClientHWAddr.String()
	host, ok := c.Hosts[mac]
	if !ok {
		reason := "unknown"
		if c.Others[mac] {
			reason = "other-site"
		}
		s.m.Ignored.WithLabelValues(reason).Inc()
		s.log.Debug("ignored", "mac", mac, "type", mt, "reason", reason)
		return nil
	}
	switch mt {
	case dhcpv4.MessageTypeDiscover:
		return s.reply(c, req, host, dhcpv4.MessageTypeOffer)
	case dhcpv4.MessageTypeRequest:
		// SELECTING names the server the client chose: if not us, a
		// server elsewhere owns the client.
		if sid := req.ServerIdentifier(); sid != nil && !sid.Equal(c.ServerIP.AsSlice()) {
			s.m.Ignored.WithLabelValues("not-for-us").Inc()
			return nil
		}
		want := req.RequestedIPAddress()
		if want == nil || want.IsUnspecified() {
			want = req.ClientIPAddr // RENEWING and REBINDING
		}
		if want == nil || !want.Equal(host.IP.AsSlice()) {
			s.log.Info("nak", "mac", mac, "requested", want, "fixed", host.IP)
			return s.nak(c, req)
		}
		s.log.Info("lease", "mac", mac, "ip", host.IP, "host", host.Hostname)
		return s.reply(c, req, host, dhcpv4.MessageTypeAck)
	case dhcpv4.MessageTypeInform:
		return s.inform(c, req, host)
	case dhcpv4.MessageTypeRelease:
		s.log.Info("release", "mac", mac, "ip", req.ClientIPAddr)
		return nil
	case dhcpv4.MessageTypeDecline:
		// The client found the address in use: someone else holds a
		// fixed address of the spec, an error an operator must see.
		s.log.Warn("decline", "mac", mac, "ip", req.RequestedIPAddress(), "host", host.Hostname)
		return nil
	}
	s.m.Ignored.WithLabelValues("unhandled-type").Inc()
	return nil
}

// networkOptions are the options of every reply with an address or
// configuration; the host's name is added per reply.
func networkOptions(c *Config) []dhcpv4.Modifier {
	mods := []dhcpv4.Modifier{
		dhcpv4.WithNetmask(c.Mask),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(c.ServerIP.AsSlice())),
	}
	if c.Router.IsValid() {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRouter(c.Router.AsSlice())))
	}
	if len(c.DNS) > 0 {
		var ips []net.IP
		for _, d := range c.DNS {
			ips = append(ips, d.AsSlice())
		}
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDNS(ips...)))
	}
	if c.Domain != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDomainName(c.Domain)), dhcpv4.WithDomainSearchList(c.Domain))
	}
	if c.MTU > 0 {
		mods = append(mods, dhcpv4.WithGeneric(dhcpv4.OptionInterfaceMTU, []byte{byte(c.MTU >> 8), byte(c.MTU)}))
	}
	if len(c.Routes) > 0 {
		var rs []*dhcpv4.Route
		for _, r := range c.Routes {
			rs = append(rs, &dhcpv4.Route{Dest: &net.IPNet{IP: r.Dst.Addr().AsSlice(), Mask: net.CIDRMask(r.Dst.Bits(), 32)}, Router: r.Via.AsSlice()})
		}
		// A client that takes option 121 ignores option 3 (RFC 3442), so
		// the default route goes in as well.
		if c.Router.IsValid() {
			rs = append(rs, &dhcpv4.Route{Dest: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, Router: c.Router.AsSlice()})
		}
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClasslessStaticRoute(rs...)))
	}
	return mods
}

// newReply is dhcpv4.NewReplyFromRequest without its random transaction
// ID, which the request's replaces anyway: drawing it (a context, a timer
// and a read of the kernel's random source per reply) was an eighth of the
// server's time. opts (copied) are the reply's options before mods.
func newReply(req *dhcpv4.DHCPv4, opts dhcpv4.Options, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	d := &dhcpv4.DHCPv4{
		HWType:        iana.HWTypeEthernet,
		ClientIPAddr:  net.IPv4zero,
		YourIPAddr:    net.IPv4zero,
		ServerIPAddr:  net.IPv4zero,
		GatewayIPAddr: net.IPv4zero,
		Options:       maps.Clone(opts),
	}
	if d.Options == nil {
		d.Options = dhcpv4.Options{}
	}
	for _, m := range []dhcpv4.Modifier{
		dhcpv4.WithReply(req),
		dhcpv4.WithGatewayIP(req.GatewayIPAddr),
		dhcpv4.WithOptionCopied(req, dhcpv4.OptionRelayAgentInformation),
		// RFC 6842: the client identifier goes back as the client sent it.
		dhcpv4.WithOptionCopied(req, dhcpv4.OptionClientIdentifier),
	} {
		m(d)
	}
	for _, m := range mods {
		m(d)
	}
	return d
}

func (s *Server) reply(c *prepared, req *dhcpv4.DHCPv4, host Host, mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	resp := newReply(req, c.lease,
		dhcpv4.WithMessageType(mt),
		dhcpv4.WithYourIP(host.IP.AsSlice()),
		dhcpv4.WithServerIP(c.ServerIP.AsSlice()),
		dhcpv4.WithOption(dhcpv4.OptHostName(host.Hostname)))
	s.m.Replies.WithLabelValues(mt.String()).Inc()
	return resp
}

func (s *Server) inform(c *prepared, req *dhcpv4.DHCPv4, host Host) *dhcpv4.DHCPv4 {
	// INFORM: configuration only, no address and no lease (RFC 2131 3.4).
	resp := newReply(req, c.inform,
		dhcpv4.WithMessageType(dhcpv4.MessageTypeAck),
		dhcpv4.WithOption(dhcpv4.OptHostName(host.Hostname)))
	s.m.Replies.WithLabelValues("INFORM-ACK").Inc()
	return resp
}

func (s *Server) nak(c *prepared, req *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	resp := newReply(req, nil,
		dhcpv4.WithMessageType(dhcpv4.MessageTypeNak),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(c.ServerIP.AsSlice())))
	// A NAK is broadcast: the client may not hold the address it asked for.
	resp.SetBroadcast()
	s.m.Replies.WithLabelValues(dhcpv4.MessageTypeNak.String()).Inc()
	return resp
}

// HandlePacket parses one datagram and returns the reply and where it
// goes, or nil. Malformed packets are counted and dropped.
func (s *Server) HandlePacket(b []byte, from *net.UDPAddr) ([]byte, *net.UDPAddr) {
	req, err := dhcpv4.FromBytes(b)
	if err != nil {
		s.m.Malformed.Inc()
		return nil, nil
	}
	resp := s.Handle(req)
	if resp == nil {
		return nil, nil
	}
	return resp.ToBytes(), destination(req, resp)
}

// destination follows RFC 2131 4.1: to the relay if there is one, to the
// client's address when it has one (renewing) and the reply is not a NAK,
// else broadcast.
func destination(req, resp *dhcpv4.DHCPv4) *net.UDPAddr {
	switch {
	case req.GatewayIPAddr != nil && !req.GatewayIPAddr.IsUnspecified():
		return &net.UDPAddr{IP: req.GatewayIPAddr, Port: dhcpv4.ServerPort}
	case resp.MessageType() != dhcpv4.MessageTypeNak && req.ClientIPAddr != nil && !req.ClientIPAddr.IsUnspecified():
		return &net.UDPAddr{IP: req.ClientIPAddr, Port: dhcpv4.ClientPort}
	}
	return &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}
}

// Serve answers on conn until it is closed.
func (s *Server) Serve(conn net.PacketConn) error {
	buf := make([]byte, 1500)
	for {
		n, from, err := conn.ReadFrom(buf)
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		if err != nil {
			return err
		}
		ua, _ := from.(*net.UDPAddr)
		resp, dst := s.HandlePacket(buf[:n], ua)
		if resp == nil {
			continue
		}
		if _, err := conn.WriteTo(resp, dst); err != nil {
			s.log.Warn("send reply", "to", dst, "err", err)
		}
	}
}
