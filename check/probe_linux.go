package check

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	"github.com/bothnia/bothnia/namespace"
)

// NetProber sends real packets from VM namespaces.
type NetProber struct {
	NS      func(vm string) string // a VM's namespace
	Timeout time.Duration
}

// TCP connects from the VM's namespace; the responder answers with the
// source address it saw.
func (p *NetProber) TCP(ctx context.Context, vm string, addr netip.Addr, port int) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, p.Timeout)
	defer cancel()
	var conn net.Conn
	err := namespace.Do(p.NS(vm), func() error {
		// The socket is made now, on this thread, in the VM's namespace,
		// and stays there after Do returns.
		var err error
		d := net.Dialer{}
		conn, err = d.DialContext(ctx, "tcp", netip.AddrPortFrom(addr, uint16(port)).String())
		return err
	})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read: %w", err)
	}
	return strings.TrimSpace(line), nil
}

// ICMP sends one echo request from the VM's namespace and waits for the
// matching reply.
func (p *NetProber) ICMP(ctx context.Context, vm string, addr netip.Addr) error {
	var c *icmp.PacketConn
	err := namespace.Do(p.NS(vm), func() error {
		var err error
		c, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	})
	if err != nil {
		return err
	}
	defer c.Close()
	id, seq := rand.IntN(0xffff), rand.IntN(0xffff)
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("bothnia check")}}
	b, _ := msg.Marshal(nil)
	dst := &net.IPAddr{IP: addr.AsSlice()}
	if _, err := c.WriteTo(b, dst); err != nil {
		return err
	}
	deadline := time.Now().Add(p.Timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = c.SetReadDeadline(deadline)
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("no echo reply: %w", err)
		}
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil {
			continue
		}
		// A raw socket sees every ICMP packet of the namespace: keep only
		// the answer to this request.
		switch body := m.Body.(type) {
		case *icmp.Echo:
			if m.Type == ipv4.ICMPTypeEchoReply && body.ID == id && body.Seq == seq && from.String() == addr.String() {
				return nil
			}
		case *icmp.DstUnreach:
			if m.Type == ipv4.ICMPTypeDestinationUnreachable && unreachFor(body.Data, addr) {
				return fmt.Errorf("destination unreachable from %s", from)
			}
		}
	}
}

// unreachFor reports whether an ICMP error quotes a packet sent to addr.
func unreachFor(quoted []byte, addr netip.Addr) bool {
	h, err := ipv4.ParseHeader(quoted)
	return err == nil && h.Dst.Equal(addr.AsSlice())
}

// Responders answer check's TCP probes in a set of namespaces.
type Responders struct {
	ls []net.Listener
	wg sync.WaitGroup
}

// Listen starts a responder on 0.0.0.0:port, for each port, in each
// namespace. Each accepted connection gets the peer's address and a newline.
func Listen(namespaces []string, ports []int) (*Responders, error) {
	r := &Responders{}
	for _, ns := range namespaces {
		for _, port := range ports {
			if err := r.listen(ns, port); err != nil {
				r.Close()
				return nil, err
			}
		}
	}
	return r, nil
}

func (r *Responders) listen(ns string, port int) error {
	var l net.Listener
	err := namespace.Do(ns, func() error {
		var err error
		l, err = net.Listen("tcp4", ":"+strconv.Itoa(port))
		return err
	})
	if err != nil {
		return fmt.Errorf("responder in %s on %d: %w", ns, port, err)
	}
	r.ls = append(r.ls, l)
	r.wg.Add(1)
	go r.serve(l)
	return nil
}

func (r *Responders) serve(l net.Listener) {
	defer r.wg.Done()
	for {
		c, err := l.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		_, _ = c.Write([]byte(host + "\n"))
		c.Close()
	}
}

// Close stops every responder.
func (r *Responders) Close() {
	for _, l := range r.ls {
		l.Close()
	}
	r.wg.Wait()
}
