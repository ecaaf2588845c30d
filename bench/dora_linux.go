package bench

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bothnia/bothnia/internal/sockbuf"
	"golang.org/x/net/ipv4"
)

// DORA plays DHCP clients behind a relay, as perfdhcp does: from the relay
// address's port 67 it sends DISCOVERs at a fixed rate, cycling through
// clients MACs (base plus 0..clients-1), answers each OFFER with a
// REQUEST for the offered address, and counts the ACKs. It exists because
// perfdhcp took a whole core here from about 7,500 exchanges per second
// and so measured itself above that: this one writes and reads in batches
// (sendmmsg, recvmmsg), builds its messages from templates, and takes a
// fraction of that. Run in its own process (the parent measures its CPU);
// it writes one JSON DORAResult.
func DORA(w io.Writer, relay, server netip.Addr, base net.HardwareAddr, clients, rate int, d time.Duration) error {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: relay.AsSlice(), Port: 67})
	if err != nil {
		return fmt.Errorf("dora: listen on the relay address: %w", err)
	}
	defer conn.Close()
	// SetReadBuffer alone stays under rmem_max (about 200 KiB).
	sockbuf.Receive(conn, sockbuf.Burst)
	_ = conn.SetWriteBuffer(sockbuf.Burst)
	g := &doraGen{pc: ipv4.NewPacketConn(conn), relay: relay.As4(), server: &net.UDPAddr{IP: server.AsSlice(), Port: 67},
		base: base, clients: clients}
	total := int(float64(rate)*d.Seconds()) + 1
	g.discovered = make([]atomic.Int64, total)
	g.offered = make([]atomic.Bool, total)
	g.acked = make([]atomic.Bool, total)
	g.latency = make([]int64, total)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); g.receive() }()
	g.t0 = time.Now()
	sent := g.send(rate, total, d)
	// A reply later than a second counts as lost, as perfdhcp's default.
	time.Sleep(time.Second)
	_ = conn.SetReadDeadline(time.Now())
	wg.Wait()
	return json.NewEncoder(w).Encode(g.result(sent, d))
}

// DORAResult is what DORA measured.
type DORAResult struct {
	Seconds    float64 `json:"seconds"`
	Discovers  int     `json:"discovers"`
	Offers     int     `json:"offers"`
	Requests   int     `json:"requests"`
	Acks       int     `json:"acks"`
	AckP50Usec int64   `json:"ack_p50_usec"` // DISCOVER sent to ACK received
	AckP99Usec int64   `json:"ack_p99_usec"`
	SendErrors int64   `json:"send_errors"`
}

type doraGen struct {
	pc      *ipv4.PacketConn
	relay   [4]byte
	server  *net.UDPAddr
	base    net.HardwareAddr
	clients int
	t0      time.Time

	// Per exchange, indexed by transaction ID: when the DISCOVER and the
	// REQUEST went (ns since t0, written before the message is sent), and
	// whether the OFFER and ACK came.
	discovered     []atomic.Int64
	offered, acked []atomic.Bool
	latency        []int64
	requests       atomic.Int64
	sendErrors     atomic.Int64
}

// BOOTP's fixed part, then the magic cookie; options follow.
const (
	bootpLen  = 236
	cookieLen = 4
	optsAt    = bootpLen + cookieLen
)

func (g *doraGen) message(xid uint32, msgType byte, yiaddr, sid []byte) []byte {
	b := make([]byte, optsAt, optsAt+16)
	b[0], b[1], b[2], b[3] = 1, 1, 6, 1 // BOOTREQUEST, Ethernet, MAC length, one hop (the relay)
	binary.BigEndian.PutUint32(b[4:], xid)
	copy(b[24:28], g.relay[:]) // giaddr: replies come back to the relay
	mac := make(net.HardwareAddr, 6)
	copy(mac, g.base)
	n := int(xid) % g.clients
	v := binary.BigEndian.Uint32(append([]byte{0}, mac[3:6]...)) + uint32(n)
	mac[3], mac[4], mac[5] = byte(v>>16), byte(v>>8), byte(v)
	copy(b[28:34], mac)
	copy(b[bootpLen:], []byte{99, 130, 83, 99})
	b = append(b, 53, 1, msgType)
	if yiaddr != nil {
		b = append(b, 50, 4)
		b = append(b, yiaddr...)
		b = append(b, 54, 4)
		b = append(b, sid...)
	}
	return append(b, 255)
}

// send paces DISCOVERs at rate for d, a batch every millisecond.
func (g *doraGen) send(rate, total int, d time.Duration) int {
	sent := 0
	pace(g.t0, rate, d, func(due int) {
		var msgs []ipv4.Message
		for ; sent < min(due, total); sent++ {
			g.discovered[sent].Store(time.Since(g.t0).Nanoseconds())
			msgs = append(msgs, ipv4.Message{Buffers: [][]byte{g.message(uint32(sent), 1, nil, nil)}, Addr: g.server})
		}
		g.write(msgs)
	})
	return sent
}

func (g *doraGen) write(msgs []ipv4.Message) {
	if n, err := writeBatch(g.pc, msgs); err != nil {
		g.sendErrors.Add(int64(len(msgs) - n))
	}
}

// receive answers OFFERs and counts ACKs until the read deadline.
func (g *doraGen) receive() {
	readBatches(g.pc, func(msgs []ipv4.Message) {
		var out []ipv4.Message
		for _, m := range msgs {
			b := m.Buffers[0][:m.N]
			xid, typ, sid, ok := parseReply(b)
			if !ok || int(xid) >= len(g.offered) {
				continue
			}
			switch typ {
			case 2: // OFFER
				if g.offered[xid].Swap(true) {
					continue
				}
				g.requests.Add(1)
				out = append(out, ipv4.Message{Buffers: [][]byte{g.message(xid, 3, b[16:20], sid)}, Addr: g.server})
			case 5: // ACK
				if g.acked[xid].Swap(true) {
					continue
				}
				g.latency[xid] = time.Since(g.t0).Nanoseconds() - g.discovered[xid].Load()
			}
		}
		g.write(out)
	})
}

// parseReply returns a reply's transaction ID, message type and server
// identifier.
func parseReply(b []byte) (xid uint32, typ byte, sid []byte, ok bool) {
	if len(b) < optsAt+3 || b[0] != 2 {
		return 0, 0, nil, false
	}
	xid = binary.BigEndian.Uint32(b[4:8])
	for i := optsAt; i < len(b); {
		code := b[i]
		if code == 255 {
			break
		}
		if code == 0 {
			i++
			continue
		}
		if i+1 >= len(b) || i+2+int(b[i+1]) > len(b) {
			break
		}
		val := b[i+2 : i+2+int(b[i+1])]
		switch {
		case code == 53 && len(val) == 1:
			typ = val[0]
		case code == 54 && len(val) == 4:
			sid = val
		}
		i += 2 + int(b[i+1])
	}
	return xid, typ, sid, typ != 0
}

func (g *doraGen) result(sent int, d time.Duration) DORAResult {
	r := DORAResult{Seconds: d.Seconds(), Discovers: sent, Requests: int(g.requests.Load()), SendErrors: g.sendErrors.Load()}
	var lat []time.Duration
	for i := 0; i < sent; i++ {
		if g.offered[i].Load() {
			r.Offers++
		}
		if g.acked[i].Load() {
			r.Acks++
			lat = append(lat, time.Duration(g.latency[i]))
		}
	}
	if len(lat) > 0 {
		p50, p99, _ := quantiles(lat)
		r.AckP50Usec, r.AckP99Usec = p50.Microseconds(), p99.Microseconds()
	}
	return r
}
