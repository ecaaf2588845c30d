package dns

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"

	mdns "github.com/miekg/dns"
	"golang.org/x/net/ipv4"
)

// ServeUDP answers queries on conn until it is closed. Several loops may
// share the server, each on its own SO_REUSEPORT socket. It reads and
// writes directly instead of through miekg's server, which costs a
// goroutine and control messages per packet: on a two-core host that is
// the difference between trailing dnsmasq and matching it.
func (s *Server) ServeUDP(conn *net.UDPConn) error {
	// recvmmsg/sendmmsg: under load one system call carries a batch of
	// queries in and their answers out.
	const batch = 32
	pc := ipv4.NewPacketConn(conn)
	in := make([]ipv4.Message, batch)
	for i := range in {
		in[i].Buffers = [][]byte{make([]byte, 4096)}
	}
	out := make([]ipv4.Message, 0, batch)
	scr := make([]scratch, batch)
	for i := range scr {
		scr[i] = scratch{key: make([]byte, 0, 300), out: make([]byte, 0, 4096)}
	}
	for {
		n, err := pc.ReadBatch(in, 0)
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		if err != nil {
			continue
		}
		out = out[:0]
		for i := 0; i < n; i++ {
			from, ok := in[i].Addr.(*net.UDPAddr)
			if !ok {
				continue
			}
			src, _ := netip.AddrFromSlice(from.IP)
			b := in[i].Buffers[0][:in[i].N]
			resp, slow := s.handleUDP(b, src.Unmap(), &scr[i], true)
			if slow {
				// A question that must be forwarded waits on an upstream:
				// answer it on the side, so one slow upstream never holds
				// up the queries behind it.
				q := append([]byte(nil), b...)
				go func() {
					if resp, _ := s.handleUDP(q, src.Unmap(), &scratch{}, false); resp != nil {
						_, _ = conn.WriteToUDP(resp, from)
					}
				}()
				continue
			}
			if resp != nil {
				out = append(out, ipv4.Message{Buffers: [][]byte{resp}, Addr: from})
			}
		}
		for len(out) > 0 {
			k, err := pc.WriteBatch(out, 0)
			if err != nil || k == 0 {
				break
			}
			out = out[k:]
		}
	}
}

// scratch holds a read loop's buffers, so the fast path allocates nothing.
type scratch struct{ key, out []byte }

// rawQuestion reads what the fast path needs from a query's wire form: the
// cache key (lowercased name, type, class, EDNS and DO) and the length of
// the question name. ok is false for anything that is not a plain query.
func rawQuestion(b []byte, key []byte) (_ []byte, nameLen int, size int, ok bool) {
	if len(b) < 12 || b[2]&0x80 != 0 || b[2]&0x78 != 0 { // QR set, or opcode not QUERY
		return nil, 0, 0, false
	}
	qd, an, ns, ar := binary.BigEndian.Uint16(b[4:]), binary.BigEndian.Uint16(b[6:]), binary.BigEndian.Uint16(b[8:]), binary.BigEndian.Uint16(b[10:])
	if qd != 1 || an != 0 || ns != 0 || ar > 1 {
		return nil, 0, 0, false
	}
	i := 12
	name := key[:0]
	for {
		if i >= len(b) {
			return nil, 0, 0, false
		}
		l := int(b[i])
		if l&0xc0 != 0 { // no compression in a question of a query
			return nil, 0, 0, false
		}
		if i+1+l > len(b) {
			return nil, 0, 0, false
		}
		for _, c := range b[i : i+1+l] {
			if c >= 'A' && c <= 'Z' {
				c += 'a' - 'A'
			}
			name = append(name, c)
		}
		i += 1 + l
		if l == 0 {
			break
		}
	}
	nameLen = i - 12
	if i+4 > len(b) {
		return nil, 0, 0, false
	}
	qt, qc := b[i:i+2], b[i+2:i+4]
	i += 4
	size = mdns.MinMsgSize
	name = append(name, qt...)
	name = append(name, qc...)
	if ar == 1 {
		// Only an OPT record: root name, type 41, class is the UDP size,
		// the DO bit in the TTL's flags.
		if i+11 > len(b) || b[i] != 0 || binary.BigEndian.Uint16(b[i+1:]) != mdns.TypeOPT {
			return nil, 0, 0, false
		}
		size = int(binary.BigEndian.Uint16(b[i+3:]))
		name = append(name, 'e')
		if b[i+7]&0x80 != 0 {
			name = append(name, 'd')
		}
	}
	if size < mdns.MinMsgSize {
		size = mdns.MinMsgSize
	}
	return name, nameLen, size, true
}

// HandleUDP answers one datagram from src, or returns nil.
func (s *Server) HandleUDP(b []byte, src netip.Addr) []byte {
	out, _ := s.handleUDP(b, src, &scratch{}, false)
	return out
}

// handleUDP answers one datagram. With deferSlow, a question that would be
// forwarded is not answered: it returns slow = true instead.
func (s *Server) handleUDP(b []byte, src netip.Addr, sc *scratch, deferSlow bool) (out []byte, slow bool) {
	allowed := s.allowedAddr(src)
	key, nameLen, size, fast := rawQuestion(b, sc.key)
	gen := s.gen.Load()
	if fast && allowed {
		sc.key = key
		out, auth, ok := s.wire.getRaw(key, gen, true, s.now(), sc.out)
		if ok && len(out) <= size {
			sc.out = out
			copy(out[0:2], b[0:2])                     // ID
			copy(out[12:12+nameLen], b[12:12+nameLen]) // the name as asked (case)
			if auth {
				s.counters["authoritative"].Inc()
			} else {
				s.counters["cache"].Inc()
			}
			return out, false
		}
	}
	r := new(mdns.Msg)
	if err := r.Unpack(b); err != nil {
		return nil, false
	}
	if deferSlow && allowed && len(r.Question) == 1 && !s.zone.Load().Authoritative(r.Question[0].Name) {
		return nil, true
	}
	resp := s.Answer(r, allowed)
	if resp == nil {
		return nil, false
	}
	if fast && allowed && (resp.Rcode == mdns.RcodeSuccess || resp.Rcode == mdns.RcodeNameError) {
		ttl := minTTL(resp)
		if resp.Authoritative {
			ttl = authTTL
		}
		s.wire.putGen(string(key), gen, resp, ttl, s.now())
	}
	out, err := resp.Pack()
	if err != nil {
		return nil, false
	}
	if len(out) > size {
		resp.Truncate(size)
		if out, err = resp.Pack(); err != nil {
			return nil, false
		}
	}
	return out, false
}
