package dns

import (
	"github.com/bothnia/bothnia/spec"
	"net"
	"net/netip"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// The production UDP loop, end to end over a socket: answers fit the
// client's buffer (512 bytes without EDNS, with TC set when cut), EDNS
// sizes and the DO bit are read by the hand-written fast path, and a
// cached answer is cut the same way as a fresh one.
func TestServeUDPTruncatesAndHonoursEDNS(t *testing.T) {
	_, z := zone(t)
	up, _ := upstream(t, 60) // 60 A records: about 1 KiB, more than 512 bytes
	loop := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	s := New(z, Options{Allow: loop, Upstreams: []string{up}, CacheSize: 100, Timeout: 2 * time.Second})
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.ServeUDP(conn) }()
	t.Cleanup(func() { conn.Close() })
	addr := conn.LocalAddr().String()

	ask := func(edns uint16, do bool) (*mdns.Msg, int) {
		t.Helper()
		q := query("big.example.org", mdns.TypeA)
		if edns > 0 {
			q.SetEdns0(edns, do)
		}
		b, err := q.Pack()
		if err != nil {
			t.Fatal(err)
		}
		c, err := net.Dial("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 65535)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("edns %d: %v", edns, err)
		}
		m := new(mdns.Msg)
		if err := m.Unpack(buf[:n]); err != nil {
			t.Fatalf("edns %d: answer does not unpack: %v", edns, err)
		}
		if m.Id != q.Id {
			t.Fatalf("answer id %d, query id %d", m.Id, q.Id)
		}
		return m, n
	}
	for round := 0; round < 2; round++ { // the second round is served from the caches
		m, n := ask(0, false)
		if n > 512 || !m.Truncated || len(m.Answer) >= 60 {
			t.Errorf("round %d, no EDNS: %d bytes, TC=%v, %d answers; want at most 512 bytes and TC set", round, n, m.Truncated, len(m.Answer))
		}
		m, n = ask(4096, false)
		if m.Truncated || len(m.Answer) != 60 || n <= 512 {
			t.Errorf("round %d, EDNS 4096: %d bytes, TC=%v, %d answers; want all 60", round, n, m.Truncated, len(m.Answer))
		}
		if opt := m.IsEdns0(); opt == nil {
			t.Errorf("round %d: an EDNS query gets an OPT record back", round)
		}
		m, n = ask(1232, true)
		if n > 1232 {
			t.Errorf("round %d, EDNS 1232 with DO: %d bytes", round, n)
		}
		if opt := m.IsEdns0(); opt == nil || !opt.Do() {
			t.Errorf("round %d: the DO bit is echoed, got %v", round, m.IsEdns0())
		}
	}
}

// FuzzHandleUDP drives the raw datagram path (the hand-written question
// parser, the packed-answer cache, truncation) with arbitrary bytes from a
// client the server serves: no panic, and every answer unpacks, carries
// the query's ID and fits the size the query allows.
func FuzzHandleUDP(f *testing.F) {
	s, _ := spec.Load("../examples/knox-epouta.yaml")
	srv := New(ZoneFromSpec(s), Options{Allow: fabric, Upstreams: []string{"127.0.0.1:1"}, Timeout: time.Millisecond, CacheSize: 100})
	for _, q := range seedQueries() {
		b, _ := q.Pack()
		f.Add(b)
	}
	src := netip.MustParseAddr("10.101.0.10")
	f.Fuzz(func(t *testing.T, b []byte) {
		r := new(mdns.Msg)
		if r.Unpack(b) == nil && len(r.Question) == 1 && !srv.zone.Load().Authoritative(r.Question[0].Name) {
			return // would forward to an upstream that is not there
		}
		for i := 0; i < 2; i++ { // twice: the second may come from the packed cache
			out := srv.HandleUDP(b, src)
			if out == nil {
				return
			}
			m := new(mdns.Msg)
			if err := m.Unpack(out); err != nil {
				t.Fatalf("answer does not unpack: %v", err)
			}
			if len(b) >= 2 && m.Id != uint16(b[0])<<8|uint16(b[1]) {
				t.Fatalf("answer id %d, query id %x", m.Id, b[:2])
			}
			size := mdns.MinMsgSize
			if opt := r.IsEdns0(); opt != nil && int(opt.UDPSize()) > size {
				size = int(opt.UDPSize())
			}
			if len(out) > size {
				t.Fatalf("answer of %d bytes to a query that takes %d", len(out), size)
			}
		}
	})
}

// seedQueries are well-formed questions of every kind the server meets.
func seedQueries() []*mdns.Msg {
	var out []*mdns.Msg
	for _, q := range []struct {
		name string
		qt   uint16
	}{
		{"knox-vm1.mosler.internal", mdns.TypeA}, {"KNOX-VM1.Mosler.Internal", mdns.TypeA},
		{"knox-vm1.mosler.internal", mdns.TypeAAAA}, {"knox-vm1.mosler.internal", mdns.TypeMX},
		{"nope.mosler.internal", mdns.TypeA}, {"mosler.internal", mdns.TypeANY}, {"mosler.internal", mdns.TypeSOA},
		{"10.128.101.10.in-addr.arpa", mdns.TypePTR}, {"99.99.101.10.in-addr.arpa", mdns.TypePTR},
	} {
		m := query(q.name, q.qt)
		out = append(out, m)
		e := query(q.name, q.qt)
		e.SetEdns0(1232, true)
		out = append(out, e)
	}
	return out
}
