package bench

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bothnia/bothnia/internal/sockbuf"
	mdns "github.com/miekg/dns"
	"golang.org/x/net/ipv4"
)

// dnsLoadSockets is how many sockets (source ports) the generator spreads
// its queries over, as dnsperf's clients: each has its own 16-bit ID space,
// so an ID comes round again only after sockets*65,536 queries.
const dnsLoadSockets = 8

// DNSLoad sends A queries for the names in file (one "name A" per line)
// to server at rate per second for d, from dnsLoadSockets sockets, and
// counts the answers that come within a second. It exists because dnsperf
// used a whole core here from about 70,000 queries per second, as much as
// the servers it measured: this one writes and reads in batches (sendmmsg,
// recvmmsg) from queries encoded once. Run in its own process (the parent
// measures its CPU); it writes one JSON DNSLoadResult.
func DNSLoad(w io.Writer, server netip.Addr, file string, rate int, d time.Duration) error {
	qs, err := encodeQuestions(file)
	if err != nil {
		return err
	}
	dst := &net.UDPAddr{IP: server.AsSlice(), Port: 53}
	g := &dnsGen{t0: time.Now()}
	for i := 0; i < dnsLoadSockets; i++ {
		c, err := net.ListenUDP("udp4", nil)
		if err != nil {
			return err
		}
		defer c.Close()
		sockbuf.Receive(c, sockbuf.Burst)
		_ = c.SetWriteBuffer(sockbuf.Burst)
		g.socks = append(g.socks, &dnsSock{pc: ipv4.NewPacketConn(c), conn: c})
	}
	var wg sync.WaitGroup
	for _, s := range g.socks {
		wg.Add(1)
		go func(s *dnsSock) { defer wg.Done(); g.receive(s) }(s)
	}
	g.t0 = time.Now()
	g.send(qs, dst, rate, d)
	time.Sleep(time.Second) // later than a second is lost, as dnsperf's -t 1
	for _, s := range g.socks {
		_ = s.conn.SetReadDeadline(time.Now())
	}
	wg.Wait()
	r := DNSLoadResult{Seconds: d.Seconds(), Sent: int(g.sent.Load()), SendErrors: g.sendErrors.Load()}
	var lat []time.Duration
	for _, s := range g.socks {
		r.Answered += s.answered
		lat = append(lat, s.latency...)
	}
	if len(lat) > 0 {
		p50, p99, _ := quantiles(lat)
		r.P50Usec, r.P99Usec = p50.Microseconds(), p99.Microseconds()
	}
	return json.NewEncoder(w).Encode(r)
}

// DNSLoadResult is what DNSLoad measured.
type DNSLoadResult struct {
	Seconds    float64 `json:"seconds"`
	Sent       int     `json:"sent"`
	Answered   int     `json:"answered"` // within a second of their query
	P50Usec    int64   `json:"p50_usec"`
	P99Usec    int64   `json:"p99_usec"`
	SendErrors int64   `json:"send_errors"`
}

type dnsGen struct {
	t0         time.Time
	socks      []*dnsSock
	sent       atomic.Int64
	sendErrors atomic.Int64
}

type dnsSock struct {
	pc   *ipv4.PacketConn
	conn *net.UDPConn
	// sentAt[id] is when the query with that ID last went (ns since t0),
	// written before the query is sent; 0 once answered.
	sentAt   [65536]atomic.Int64
	next     uint16
	answered int
	latency  []time.Duration
}

// encodeQuestions reads "name A" lines and returns each query's question
// section, encoded (the header is written per query).
func encodeQuestions(file string) ([][]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out [][]byte
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		m := new(mdns.Msg)
		m.SetQuestion(mdns.Fqdn(fields[0]), mdns.TypeA)
		b, err := m.Pack()
		if err != nil {
			return nil, fmt.Errorf("dns load: %s: %w", fields[0], err)
		}
		out = append(out, b[12:])
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("dns load: no names in %s", file)
	}
	return out, sc.Err()
}

// query is a recursive query with the given ID and encoded question.
func query(id uint16, q []byte) []byte {
	b := make([]byte, 12, 12+len(q))
	binary.BigEndian.PutUint16(b[0:], id)
	b[2] = 0x01                          // RD
	binary.BigEndian.PutUint16(b[4:], 1) // one question
	return append(b, q...)
}

// send paces the queries at rate for d, a batch per socket every
// millisecond, cycling through the names.
func (g *dnsGen) send(qs [][]byte, dst *net.UDPAddr, rate int, d time.Duration) {
	sent := 0
	batches := make([][]ipv4.Message, len(g.socks))
	pace(g.t0, rate, d, func(due int) {
		for i := range batches {
			batches[i] = batches[i][:0]
		}
		for ; sent < due; sent++ {
			s := g.socks[sent%len(g.socks)]
			id := s.next
			s.next++
			b := query(id, qs[sent%len(qs)])
			s.sentAt[id].Store(time.Since(g.t0).Nanoseconds())
			i := sent % len(g.socks)
			batches[i] = append(batches[i], ipv4.Message{Buffers: [][]byte{b}, Addr: dst})
		}
		for i, msgs := range batches {
			n, err := writeBatch(g.socks[i].pc, msgs)
			g.sent.Add(int64(n))
			if err != nil {
				g.sendErrors.Add(int64(len(msgs) - n))
			}
		}
	})
}

// receive counts a socket's answers that come within a second.
func (g *dnsGen) receive(s *dnsSock) {
	readBatches(s.pc, func(msgs []ipv4.Message) {
		now := time.Since(g.t0).Nanoseconds()
		for _, m := range msgs {
			b := m.Buffers[0][:m.N]
			if len(b) < 12 || b[2]&0x80 == 0 {
				continue // not a response
			}
			id := binary.BigEndian.Uint16(b[0:2])
			at := s.sentAt[id].Swap(0)
			if at == 0 {
				continue // answered already, or never asked
			}
			if lat := time.Duration(now - at); lat <= time.Second {
				s.answered++
				s.latency = append(s.latency, lat)
			}
		}
	})
}
