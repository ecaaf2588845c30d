package dns

import (
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/bothnia/bothnia/spec"
)

func zone(t *testing.T) (*spec.Spec, *Zone) {
	t.Helper()
	s, err := spec.Load("../examples/knox-epouta.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return s, ZoneFromSpec(s)
}

func query(name string, qt uint16) *mdns.Msg {
	m := new(mdns.Msg)
	m.SetQuestion(mdns.Fqdn(name), qt)
	return m
}

// upstream is a resolver on loopback that answers every A query with n
// records and counts the queries it gets.
func upstream(t *testing.T, n int) (string, *atomic.Int64) {
	t.Helper()
	var count atomic.Int64
	h := mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		count.Add(1)
		m := new(mdns.Msg)
		m.SetReply(r)
		if r.Question[0].Name == "nx.example.org." {
			m.Rcode = mdns.RcodeNameError
			m.Ns = []mdns.RR{&mdns.SOA{Hdr: mdns.RR_Header{Name: "example.org.", Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: 30}, Ns: "ns.example.org.", Mbox: "h.example.org.", Minttl: 30}}
		} else {
			for i := 0; i < n; i++ {
				m.Answer = append(m.Answer, &mdns.A{Hdr: mdns.RR_Header{Name: r.Question[0].Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 100}, A: net.IPv4(203, 0, 113, byte(i+1))})
			}
		}
		_ = w.WriteMsg(m)
	})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &mdns.Server{PacketConn: pc, Handler: h}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return pc.LocalAddr().String(), &count
}

var fabric = []netip.Prefix{netip.MustParsePrefix("10.101.0.0/16")}

func TestAuthoritative(t *testing.T) {
	_, z := zone(t)
	s := New(z, Options{Allow: fabric})
	cases := []struct {
		name  string
		qt    uint16
		rcode int
		want  string
	}{
		{"epouta-vm1.mosler.internal", mdns.TypeA, mdns.RcodeSuccess, "10.101.0.10"},
		{"KNOX-VM2.mosler.internal", mdns.TypeA, mdns.RcodeSuccess, "10.101.128.11"},
		{"10.0.101.10.in-addr.arpa", mdns.TypePTR, mdns.RcodeSuccess, "epouta-vm1.mosler.internal."},
		{"nobody.mosler.internal", mdns.TypeA, mdns.RcodeNameError, ""},
		{"knox-vm1.mosler.internal", mdns.TypeAAAA, mdns.RcodeSuccess, ""}, // NODATA
		{"sandbox-vm1.mosler.internal", mdns.TypeA, mdns.RcodeNameError, ""},
	}
	for _, c := range cases {
		m := s.Answer(query(c.name, c.qt), true)
		if m.Rcode != c.rcode || !m.Authoritative {
			t.Errorf("%s: rcode %d aa %v, want %d aa", c.name, m.Rcode, m.Authoritative, c.rcode)
			continue
		}
		got := ""
		if len(m.Answer) == 1 {
			switch rr := m.Answer[0].(type) {
			case *mdns.A:
				got = rr.A.String()
			case *mdns.PTR:
				got = rr.Ptr
			}
		}
		if got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, got, c.want)
		}
		if c.want == "" && len(m.Ns) != 1 {
			t.Errorf("%s: a negative answer carries the SOA", c.name)
		}
	}
}

func TestRefusesOutsiders(t *testing.T) {
	_, z := zone(t)
	s := New(z, Options{Allow: fabric})
	if m := s.Answer(query("www.example.org", mdns.TypeA), false); m.Rcode != mdns.RcodeRefused {
		t.Fatalf("rcode %d, want REFUSED", m.Rcode)
	}
	if !s.allowed(&net.UDPAddr{IP: net.ParseIP("10.101.3.4")}) || s.allowed(&net.UDPAddr{IP: net.ParseIP("198.51.100.7")}) {
		t.Fatal("source check wrong")
	}
}

func TestForwardAndCache(t *testing.T) {
	_, z := zone(t)
	up, count := upstream(t, 1)
	now := time.Unix(1000, 0)
	s := New(z, Options{Allow: fabric, Upstreams: []string{up}, CacheSize: 2, Now: func() time.Time { return now }})
	m := s.Answer(query("www.example.org", mdns.TypeA), true)
	if m.Rcode != 0 || len(m.Answer) != 1 || count.Load() != 1 {
		t.Fatalf("forward: %v (upstream saw %d)", m, count.Load())
	}
	now = now.Add(40 * time.Second)
	m = s.Answer(query("www.example.org", mdns.TypeA), true)
	if count.Load() != 1 || m.Answer[0].Header().Ttl != 60 {
		t.Fatalf("cache: upstream saw %d, ttl %d (want 1, 60)", count.Load(), m.Answer[0].Header().Ttl)
	}
	now = now.Add(61 * time.Second)
	s.Answer(query("www.example.org", mdns.TypeA), true)
	if count.Load() != 2 {
		t.Fatalf("an expired entry must be fetched again; upstream saw %d", count.Load())
	}
	// Negative answers are cached for the SOA minimum.
	s.Answer(query("nx.example.org", mdns.TypeA), true)
	s.Answer(query("nx.example.org", mdns.TypeA), true)
	if count.Load() != 3 {
		t.Fatalf("NXDOMAIN not cached: upstream saw %d", count.Load())
	}
	// The size bound evicts the least recently used.
	s.Answer(query("a.example.org", mdns.TypeA), true)
	s.Answer(query("b.example.org", mdns.TypeA), true)
	if s.cache.len() != 2 {
		t.Fatalf("cache holds %d, bound is 2", s.cache.len())
	}
	if got := testutil.ToFloat64(s.m.Queries.WithLabelValues("cache")); got != 2 {
		t.Fatalf("cache hits %v, want 2", got)
	}
}

func TestServfailWithoutUpstream(t *testing.T) {
	_, z := zone(t)
	s := New(z, Options{Allow: fabric, Upstreams: []string{"127.0.0.1:1"}, Timeout: 200 * time.Millisecond})
	if m := s.Answer(query("www.example.org", mdns.TypeA), true); m.Rcode != mdns.RcodeServerFailure {
		t.Fatalf("rcode %d, want SERVFAIL", m.Rcode)
	}
}

// Over real UDP and TCP on loopback: a big answer is truncated on UDP for a
// client without EDNS, and comes whole over TCP.
func TestTruncationAndTCP(t *testing.T) {
	_, z := zone(t)
	up, _ := upstream(t, 60)
	s := New(z, Options{Allow: fabric, Upstreams: []string{up}, CacheSize: 10})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	us, ts := &mdns.Server{PacketConn: pc, Handler: s}, &mdns.Server{Listener: ln, Handler: s}
	go func() { _ = us.ActivateAndServe() }()
	go func() { _ = ts.ActivateAndServe() }()
	defer us.Shutdown()
	defer ts.Shutdown()
	time.Sleep(50 * time.Millisecond)
	udp := &mdns.Client{Net: "udp"}
	m, _, err := udp.Exchange(query("big.example.org", mdns.TypeA), pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	if !m.Truncated || len(m.Answer) >= 60 {
		t.Fatalf("UDP answer of %d records, truncated=%v; want truncated", len(m.Answer), m.Truncated)
	}
	tcp := &mdns.Client{Net: "tcp"}
	m, _, err = tcp.Exchange(query("big.example.org", mdns.TypeA), pc.LocalAddr().String())
	if err != nil || m.Truncated || len(m.Answer) != 60 {
		t.Fatalf("TCP answer: %d records, truncated=%v, err %v", len(m.Answer), m.Truncated, err)
	}
}

func TestNamesChangeLive(t *testing.T) {
	sp, z := zone(t)
	s := New(z, Options{Allow: fabric})
	sp.Networks[0].VMs = append(sp.Networks[0].VMs, &spec.VM{Name: "late", Node: "knox-c1", IP: "10.101.128.77", MAC: "fa:16:3e:80:00:77"})
	s.SetZone(ZoneFromSpec(sp))
	m := s.Answer(query("late.mosler.internal", mdns.TypeA), true)
	if len(m.Answer) != 1 {
		t.Fatalf("a VM added to the spec does not resolve: %v", m)
	}
	sp.Networks[0].VMs = sp.Networks[0].VMs[:len(sp.Networks[0].VMs)-1]
	s.SetZone(ZoneFromSpec(sp))
	if m := s.Answer(query("late.mosler.internal", mdns.TypeA), true); m.Rcode != mdns.RcodeNameError {
		t.Fatalf("a removed VM still resolves: %v", m)
	}
}

// FuzzAnswer: any message, however malformed, gets an answer that packs,
// or none, and never a panic.
func FuzzAnswer(f *testing.F) {
	s, _ := spec.Load("../examples/knox-epouta.yaml")
	srv := New(ZoneFromSpec(s), Options{Allow: fabric, Upstreams: []string{"127.0.0.1:1"}, Timeout: time.Millisecond})
	for _, q := range []*mdns.Msg{query("knox-vm1.mosler.internal", mdns.TypeA), query("10.0.101.10.in-addr.arpa", mdns.TypePTR), query("mosler.internal", mdns.TypeANY)} {
		b, _ := q.Pack()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := new(mdns.Msg)
		if err := r.Unpack(b); err != nil {
			return
		}
		if len(r.Question) == 1 && !srv.zone.Load().Authoritative(r.Question[0].Name) {
			return // would forward; the forwarder is not under test here
		}
		m := srv.Answer(r, true)
		if m == nil {
			return
		}
		if _, err := m.Pack(); err != nil {
			t.Fatalf("answer does not pack: %v\n%v", err, m)
		}
	})
}

// The raw UDP path: a repeated question is served from its packed answer,
// with the client's ID and spelling, and a zone change is seen at once.
func TestHandleUDPFastPath(t *testing.T) {
	sp, z := zone(t)
	s := New(z, Options{Allow: fabric, CacheSize: 100})
	src := netip.MustParseAddr("10.101.0.10")
	ask := func(name string, id uint16) *mdns.Msg {
		q := query(name, mdns.TypeA)
		q.Id = id
		b, _ := q.Pack()
		out := s.HandleUDP(b, src)
		m := new(mdns.Msg)
		if err := m.Unpack(out); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return m
	}
	first := ask("knox-vm1.mosler.internal", 1)
	second := ask("KNOX-vm1.Mosler.Internal", 2)
	if second.Id != 2 || second.Question[0].Name != "KNOX-vm1.Mosler.Internal." || len(second.Answer) != 1 ||
		second.Answer[0].(*mdns.A).A.String() != "10.101.128.10" {
		t.Fatalf("cached answer: %v (first %v)", second, first)
	}
	if got := testutil.ToFloat64(s.m.Queries.WithLabelValues("authoritative")); got != 2 {
		t.Fatalf("authoritative answers counted %v, want 2", got)
	}
	sp.Networks[0].VMs[0].IP = "10.101.128.55"
	s.SetZone(ZoneFromSpec(sp))
	if m := ask("knox-vm1.mosler.internal", 3); m.Answer[0].(*mdns.A).A.String() != "10.101.128.55" {
		t.Fatalf("after a zone change the old answer was served: %v", m)
	}
	q := query("knox-vm1.mosler.internal", mdns.TypeA)
	b, _ := q.Pack()
	if out := s.HandleUDP(b, netip.MustParseAddr("198.51.100.1")); out == nil {
		t.Fatal("no answer to an outsider")
	} else if m := new(mdns.Msg); m.Unpack(out) != nil || m.Rcode != mdns.RcodeRefused {
		t.Fatalf("an outsider must be refused, got %v", m)
	}
}

// A question waiting on a silent upstream must not hold up the answers to
// the questions behind it.
func TestSlowUpstreamDoesNotBlock(t *testing.T) {
	_, z := zone(t)
	silent, err := net.ListenPacket("udp", "127.0.0.1:0") // reads nothing, answers nothing
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	s := New(z, Options{Allow: fabric, Upstreams: []string{silent.LocalAddr().String()}, Timeout: 3 * time.Second, CacheSize: 10})
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.ServeUDP(conn) }()
	defer conn.Close()
	c := &mdns.Client{Net: "udp", Timeout: 5 * time.Second}
	go func() { _, _, _ = c.Exchange(query("slow.example.org", mdns.TypeA), conn.LocalAddr().String()) }()
	time.Sleep(100 * time.Millisecond)
	t0 := time.Now()
	m, _, err := c.Exchange(query("knox-vm1.mosler.internal", mdns.TypeA), conn.LocalAddr().String())
	if err != nil || len(m.Answer) != 1 {
		t.Fatalf("authoritative answer: %v, %v", m, err)
	}
	if d := time.Since(t0); d > time.Second {
		t.Fatalf("the authoritative answer waited %v behind a forwarded question", d)
	}
}
