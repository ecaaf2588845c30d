// Package flows runs the traffic a failover is measured with, each end in
// a network namespace: a TCP source and a download that reads it (one
// stream, which a reset ends), and a UDP echo with a probe that keeps the
// longest time between two answers (how long forwarding stopped).
package flows

import (
	"encoding/binary"
	"net"
	"sync"
	"time"

	"github.com/bothnia/bothnia/namespace"
)

// Source writes a kilobyte every 2 ms to each connection it accepts on
// addr in ns, until Close or the connection fails.
type Source struct {
	ln   net.Listener
	stop chan struct{}
	mu   sync.Mutex
	err  error
}

// StartSource listens on addr in ns.
func StartSource(ns, addr string) (*Source, error) {
	s := &Source{stop: make(chan struct{})}
	if err := namespace.Do(ns, func() error {
		var err error
		s.ln, err = net.Listen("tcp4", addr)
		return err
	}); err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			go s.feed(c)
		}
	}()
	return s, nil
}

func (s *Source) feed(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 1024)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
		}
		if _, err := c.Write(buf); err != nil {
			s.mu.Lock()
			s.err = err
			s.mu.Unlock()
			return
		}
	}
}

// Err is how the last connection that failed ended (a reset: ECONNRESET).
func (s *Source) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close stops listening and writing.
func (s *Source) Close() {
	close(s.stop)
	s.ln.Close()
}

// Download reads one connection, counting bytes, until it fails.
type Download struct {
	c   net.Conn
	mu  sync.Mutex
	n   int
	err error
}

// StartDownload connects from ns to addr and reads.
func StartDownload(ns, addr string, timeout time.Duration) (*Download, error) {
	d := &Download{}
	if err := namespace.Do(ns, func() error {
		var err error
		d.c, err = net.DialTimeout("tcp4", addr, timeout)
		return err
	}); err != nil {
		return nil, err
	}
	go func() {
		buf := make([]byte, 65536)
		for {
			n, err := d.c.Read(buf)
			d.mu.Lock()
			d.n += n
			if err != nil && d.err == nil {
				d.err = err
			}
			d.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return d, nil
}

// State is the bytes read so far and the error that ended the stream.
func (d *Download) State() (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n, d.err
}

// Close ends the download.
func (d *Download) Close() { d.c.Close() }

// StartEcho answers UDP datagrams on addr in ns with themselves.
func StartEcho(ns, addr string) (func(), error) {
	var pc net.PacketConn
	if err := namespace.Do(ns, func() error {
		var err error
		pc, err = net.ListenPacket("udp4", addr)
		return err
	}); err != nil {
		return nil, err
	}
	go func() {
		buf := make([]byte, 64)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()
	return func() { pc.Close() }, nil
}

// Silence keeps the longest time between two answers, of a probe or a
// query loop, counted from Start.
type Silence struct {
	mu   sync.Mutex
	last time.Time
	max  time.Duration
}

// Start counts from now, as if an answer had just come.
func (s *Silence) Start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last, s.max = time.Now(), 0
}

// Heard records an answer now.
func (s *Silence) Heard() {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.max = max(s.max, now.Sub(s.last))
	s.last = now
}

// MaxGap is the longest time without an answer since the last Reset,
// the current silence included.
func (s *Silence) MaxGap() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return max(s.max, time.Since(s.last))
}

// Reset starts a new measurement; a silence already under way counts.
func (s *Silence) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.max = 0
}

// Probe sends a numbered datagram every interval from ns to an echo and
// keeps when answers came.
type Probe struct {
	Silence
	c    net.Conn
	stop chan struct{}
}

// StartProbe starts sending from ns to addr every interval.
func StartProbe(ns, addr string, every time.Duration) (*Probe, error) {
	p := &Probe{stop: make(chan struct{})}
	p.Start()
	if err := namespace.Do(ns, func() error {
		var err error
		p.c, err = net.Dial("udp4", addr)
		return err
	}); err != nil {
		return nil, err
	}
	go func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		var seq uint64
		for {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			seq++
			var b [8]byte
			binary.BigEndian.PutUint64(b[:], seq)
			_, _ = p.c.Write(b[:])
		}
	}()
	go func() {
		buf := make([]byte, 64)
		for {
			if _, err := p.c.Read(buf); err != nil {
				select {
				case <-p.stop:
					return
				default:
				}
				// An ICMP error (refused, unreachable) comes back as a
				// read error: keep reading.
				time.Sleep(time.Millisecond)
				continue
			}
			p.Heard()
		}
	}()
	return p, nil
}

// Close stops the probe.
func (p *Probe) Close() {
	close(p.stop)
	p.c.Close()
}
