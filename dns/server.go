package dns

import (
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// TTL of the authoritative answers: short, since VMs come and go.
const authTTL = 60

// Server answers DNS for the fabric.
type Server struct {
	zone      atomic.Pointer[Zone]
	gen       atomic.Uint64 // bumped by SetZone, so stale packed answers never match
	wire      *wireCache
	now       func() time.Time
	counters  map[string]prometheus.Counter
	upstreams []string // host:port
	allow     []netip.Prefix
	cache     *cache
	client    *mdns.Client
	tcp       *mdns.Client
	log       *slog.Logger
	m         *Metrics
}

// Metrics are the server's Prometheus counters.
type Metrics struct {
	Queries *prometheus.CounterVec // by answer: authoritative, cache, forwarded, refused, servfail
	Cached  prometheus.GaugeFunc
}

// Options configure a server.
type Options struct {
	Upstreams []string       // resolvers to forward to (host or host:port)
	Allow     []netip.Prefix // sources served; others are REFUSED
	CacheSize int
	Timeout   time.Duration
	Log       *slog.Logger
	Registry  prometheus.Registerer
	Now       func() time.Time
}

// New returns a server for the zone.
func New(z *Zone, o Options) *Server {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Second
	}
	s := &Server{allow: o.Allow, log: o.Log, cache: newCache(o.CacheSize, o.Now), wire: newWireCache(o.CacheSize + 4096), now: o.Now,
		client: &mdns.Client{Net: "udp", Timeout: o.Timeout, UDPSize: mdns.DefaultMsgSize},
		tcp:    &mdns.Client{Net: "tcp", Timeout: o.Timeout}}
	for _, u := range o.Upstreams {
		if _, _, err := net.SplitHostPort(u); err != nil {
			u = net.JoinHostPort(u, "53")
		}
		s.upstreams = append(s.upstreams, u)
	}
	s.m = &Metrics{
		Queries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bothnia_dns_queries_total", Help: "DNS queries, by how they were answered."}, []string{"answer"}),
	}
	s.m.Cached = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "bothnia_dns_cache_entries", Help: "Entries in the forwarder's cache."}, func() float64 { return float64(s.cache.len()) })
	if o.Registry != nil {
		o.Registry.MustRegister(s.m.Queries, s.m.Cached)
	}
	// Resolved once: a label lookup per query costs more than the counter.
	s.counters = map[string]prometheus.Counter{}
	for _, l := range []string{"authoritative", "cache", "forwarded", "refused", "servfail"} {
		s.counters[l] = s.m.Queries.WithLabelValues(l)
	}
	s.zone.Store(z)
	return s
}

// SetZone replaces the authoritative data, live.
func (s *Server) SetZone(z *Zone) {
	s.zone.Store(z)
	s.gen.Add(1)
}

func (s *Server) allowed(a net.Addr) bool {
	var ip net.IP
	switch v := a.(type) {
	case *net.UDPAddr:
		ip = v.IP
	case *net.TCPAddr:
		ip = v.IP
	}
	addr, ok := netip.AddrFromSlice(ip)
	if !ok {
		return false
	}
	return s.allowedAddr(addr.Unmap())
}

func (s *Server) allowedAddr(addr netip.Addr) bool {
	if addr.IsLoopback() {
		return true
	}
	for _, p := range s.allow {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// ServeDNS implements mdns.Handler. A question answered before is served
// from its packed answer (see wireCache); anything else goes through Answer.
func (s *Server) ServeDNS(w mdns.ResponseWriter, r *mdns.Msg) {
	allowed := s.allowed(w.RemoteAddr())
	_, udp := w.RemoteAddr().(*net.UDPAddr)
	size := mdns.MinMsgSize
	opt := r.IsEdns0()
	if opt != nil {
		size = int(opt.UDPSize())
	}
	fast := allowed && !r.Response && r.Opcode == mdns.OpcodeQuery && len(r.Question) == 1
	var key string
	if fast {
		key = wireKey(s.gen.Load(), r.Question[0], opt != nil, opt != nil && opt.Do())
		if b := s.wire.get(key, r, s.now()); b != nil && (!udp || len(b) <= size) {
			if s.zone.Load().Authoritative(r.Question[0].Name) {
				s.counters["authoritative"].Inc()
			} else {
				s.counters["cache"].Inc()
			}
			_, _ = w.Write(b)
			return
		}
	}
	resp := s.Answer(r, allowed)
	if resp == nil {
		return
	}
	if fast && (resp.Rcode == mdns.RcodeSuccess || resp.Rcode == mdns.RcodeNameError) {
		ttl := minTTL(resp)
		if resp.Authoritative {
			ttl = authTTL
		}
		s.wire.put(key, resp, ttl, s.now())
	}
	if udp {
		b, err := resp.Pack()
		if err == nil && len(b) <= size {
			_, _ = w.Write(b)
			return
		}
		resp.Truncate(size)
	}
	_ = w.WriteMsg(resp)
}

// Answer builds the answer to one query; allowed says whether the source
// may use the server. It returns nil for messages not to be answered.
func (s *Server) Answer(r *mdns.Msg, allowed bool) *mdns.Msg {
	return withEDNS(r, s.answer(r, allowed))
}

// ednsSize is the UDP payload size bothnia offers: the DNS flag day's
// 1232, which fits any path's MTU without fragments.
const ednsSize = 1232

// withEDNS gives an answer the OPT record its query calls for (RFC 6891:
// a responder answers an OPT with an OPT, echoing the DO bit) and never an
// upstream's, whose size is not what this server accepts.
func withEDNS(r, m *mdns.Msg) *mdns.Msg {
	if m == nil {
		return nil
	}
	extra := m.Extra[:0:0]
	for _, rr := range m.Extra {
		if rr.Header().Rrtype != mdns.TypeOPT {
			extra = append(extra, rr)
		}
	}
	m.Extra = extra
	if opt := r.IsEdns0(); opt != nil {
		m.SetEdns0(ednsSize, opt.Do())
	}
	return m
}

func (s *Server) answer(r *mdns.Msg, allowed bool) *mdns.Msg {
	if r.Response || len(r.Question) != 1 || r.Opcode != mdns.OpcodeQuery {
		if r.Response {
			return nil
		}
		m := new(mdns.Msg)
		m.SetRcode(r, mdns.RcodeFormatError)
		return m
	}
	if !allowed {
		s.counters["refused"].Inc()
		m := new(mdns.Msg)
		m.SetRcode(r, mdns.RcodeRefused)
		return m
	}
	q := r.Question[0]
	z := s.zone.Load()
	if z.Authoritative(q.Name) {
		s.counters["authoritative"].Inc()
		return s.authoritative(z, r, q)
	}
	do := r.IsEdns0() != nil && r.IsEdns0().Do()
	key := cacheKey(q, do)
	if m := s.cache.get(key); m != nil {
		s.counters["cache"].Inc()
		m.Id = r.Id
		return m
	}
	m := s.forward(r)
	if m == nil {
		s.counters["servfail"].Inc()
		f := new(mdns.Msg)
		f.SetRcode(r, mdns.RcodeServerFailure)
		return f
	}
	s.counters["forwarded"].Inc()
	s.cache.put(key, m)
	m.Id = r.Id
	return m
}

func (s *Server) authoritative(z *Zone, r *mdns.Msg, q mdns.Question) *mdns.Msg {
	m := new(mdns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	name := mdns.CanonicalName(q.Name)
	hdr := mdns.RR_Header{Name: q.Name, Class: mdns.ClassINET, Ttl: authTTL}
	found := false
	switch {
	case len(z.A[name]) > 0:
		found = true
		if q.Qtype == mdns.TypeA || q.Qtype == mdns.TypeANY {
			for _, a := range z.A[name] {
				h := hdr
				h.Rrtype = mdns.TypeA
				m.Answer = append(m.Answer, &mdns.A{Hdr: h, A: a.AsSlice()})
			}
		}
	case z.PTR[name] != "":
		found = true
		if q.Qtype == mdns.TypePTR || q.Qtype == mdns.TypeANY {
			h := hdr
			h.Rrtype = mdns.TypePTR
			m.Answer = append(m.Answer, &mdns.PTR{Hdr: h, Ptr: z.PTR[name]})
		}
	case name == z.Domain || name == z.Reverse:
		found = true
	}
	if !found {
		m.Rcode = mdns.RcodeNameError
	}
	if len(m.Answer) == 0 {
		apex := z.Domain
		if mdns.IsSubDomain(z.Reverse, name) {
			apex = z.Reverse
		}
		m.Ns = append(m.Ns, &mdns.SOA{Hdr: mdns.RR_Header{Name: apex, Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: authTTL},
			Ns: "ns." + z.Domain, Mbox: "hostmaster." + z.Domain, Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: authTTL})
	}
	return m
}

// forward asks the upstreams in turn, over TCP when UDP comes back truncated.
func (s *Server) forward(r *mdns.Msg) *mdns.Msg {
	q := r.Copy()
	for _, u := range s.upstreams {
		m, _, err := s.client.Exchange(q, u)
		if err == nil && m.Truncated {
			m, _, err = s.tcp.Exchange(q, u)
		}
		if err != nil {
			s.log.Warn("forward", "upstream", u, "name", r.Question[0].Name, "err", err)
			continue
		}
		return m
	}
	return nil
}
