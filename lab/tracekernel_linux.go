package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/bothnia/bothnia/check"
	"github.com/bothnia/bothnia/internal/packetsock"
	"github.com/bothnia/bothnia/namespace"
	"github.com/bothnia/bothnia/spec"
	"github.com/bothnia/bothnia/trace"
)

// TraceKernel sends the packet a model trace describes for real, from the
// source VM, with nftables tracing on in every node and router namespace of
// the lab, and returns the kernel's path and verdict: dropped if any rule or
// chain policy dropped it, delivered if nothing did and (for a packet with
// the VM's own source) it was answered.
//
// A forged source address goes as a raw IPv4 packet, a forged source MAC
// as a raw Ethernet frame from the VM's eth0 (to the target VM's MAC, or
// broadcast when the target is not a VM of the spec).
func (l *Lab) TraceKernel(s *spec.Spec, t *trace.Trace, r trace.Request) (*trace.Kernel, error) {
	fromVM, forged := r.From, r.SrcIP != "" || r.SrcMAC != ""
	if !t.Src.Is4() || !t.Dst.Is4() {
		return nil, errors.New("trace --kernel: IPv4 only")
	}
	nss, err := l.traceNamespaces(s)
	if err != nil {
		return nil, err
	}
	rules := trace.KernelRules(t)
	var added []string
	defer func() {
		for _, ns := range added {
			_ = exec.Command("ip", "netns", "exec", ns, "nft", "delete table bridge "+trace.KernelTable+"; delete table ip "+trace.KernelTable).Run()
		}
	}()
	for _, tn := range nss {
		ns := tn.ns
		cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(rules)
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("trace --kernel: %s: nft: %v: %s", ns, err, out)
		}
		added = append(added, ns)
	}
	var mu sync.Mutex
	var traced []trace.Traced
	var mons []*exec.Cmd
	for _, tn := range nss {
		cmd := exec.Command("ip", "netns", "exec", tn.ns, "nft", "monitor", "trace")
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		mons = append(mons, cmd)
		go func(tn traceNS) {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if line := sc.Text(); strings.HasPrefix(line, "trace id") {
					mu.Lock()
					traced = append(traced, trace.Traced{NS: tn.ns, Node: tn.node, Router: tn.router, Line: line})
					mu.Unlock()
				}
			}
		}(tn)
	}
	stop := func() {
		for _, m := range mons {
			_ = m.Process.Kill()
			_ = m.Wait()
		}
	}
	time.Sleep(150 * time.Millisecond) // the monitors subscribe
	var answered bool
	var sendErr error
	if r.SrcMAC != "" {
		sendErr = l.sendFrame(s, r, t)
	} else {
		answered, sendErr = l.send(fromVM, t, forged)
	}
	time.Sleep(300 * time.Millisecond) // the last events arrive
	stop()
	if sendErr != nil {
		return nil, sendErr
	}
	mu.Lock()
	defer mu.Unlock()
	return t.Judge(traced, answered, forged)
}

// traceNS is a namespace trace --kernel watches: a node's, or its router's.
type traceNS struct {
	ns, node string
	router   bool
}

// traceNamespaces are the lab's node namespaces and their router and DHCP
// namespaces.
func (l *Lab) traceNamespaces(s *spec.Spec) ([]traceNS, error) {
	have, err := namespace.List(l.All())
	if err != nil {
		return nil, err
	}
	var out []traceNS
	for _, node := range s.NodeNames() {
		for _, ns := range have {
			switch {
			case ns == l.NodeNS(node):
				out = append(out, traceNS{ns, node, false})
			case strings.HasPrefix(ns, l.SubPrefix(node)+"qrouter-"):
				out = append(out, traceNS{ns, node, true})
			}
		}
	}
	return out, nil
}

// send sends the packet from the VM: with the VM's own address through its
// sockets (and reports whether it was answered), with a forged one as a
// raw IPv4 packet (whose answer, if any, goes to the forged address).
func (l *Lab) send(vm string, t *trace.Trace, forged bool) (bool, error) {
	p := &check.NetProber{NS: l.VMNS, Timeout: 400 * time.Millisecond}
	ctx := context.Background()
	if !forged {
		switch t.Proto {
		case 1:
			return p.ICMP(ctx, vm, t.Dst) == nil, nil
		case 6:
			var conn net.Conn
			err := namespace.Do(l.VMNS(vm), func() error {
				var err error
				conn, err = net.DialTimeout("tcp", netip.AddrPortFrom(t.Dst, uint16(t.DPort)).String(), 400*time.Millisecond)
				return err
			})
			if err == nil {
				conn.Close()
			}
			// A reset (nothing listens there) is an answer too: the SYN
			// arrived.
			return err == nil || errors.Is(err, syscall.ECONNREFUSED), nil
		}
	}
	return false, l.sendRaw(vm, t)
}

// sendFrame writes one Ethernet frame from the VM's eth0 (trace.Frame).
func (l *Lab) sendFrame(s *spec.Spec, r trace.Request, t *trace.Trace) error {
	frame, err := t.Frame(s, r)
	if err != nil {
		return err
	}
	return packetsock.Send(l.VMNS(r.From), VMDev, frame)
}

// sendRaw writes one IPv4 packet, header and all, from the VM.
func (l *Lab) sendRaw(vm string, t *trace.Trace) error {
	b, err := t.IPv4Packet()
	if err != nil {
		return err
	}
	return namespace.Do(l.VMNS(vm), func() error {
		c, err := net.ListenPacket("ip4:"+strconv.Itoa(t.Proto), "0.0.0.0")
		if err != nil {
			return err
		}
		defer c.Close()
		rc, err := ipv4.NewRawConn(c)
		if err != nil {
			return err
		}
		h, err := ipv4.ParseHeader(b)
		if err != nil {
			return err
		}
		return rc.WriteTo(h, b[h.Len:], nil)
	})
}
