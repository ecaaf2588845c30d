package lab

import (
	"encoding/binary"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bothnia/bothnia/internal/packetsock"
	"github.com/bothnia/bothnia/namespace"
	"github.com/bothnia/bothnia/spec"
)

// arpWatch records ARP packets seen on every interface of a namespace.
type arpWatch struct {
	mu   sync.Mutex
	seen []string // "op spa tpa"
	fd   int
}

func watchARP(t *testing.T, ns string) *arpWatch {
	t.Helper()
	w := &arpWatch{}
	if err := namespace.Do(ns, func() error {
		var err error
		w.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(packetsock.Htons(unix.ETH_P_ARP)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	_ = unix.SetsockoptTimeval(w.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 50000})
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, _, err := unix.Recvfrom(w.fd, buf, 0)
			if err != nil || n < 42 {
				continue
			}
			op := "request"
			if binary.BigEndian.Uint16(buf[20:]) == 2 {
				op = "reply"
			}
			w.mu.Lock()
			w.seen = append(w.seen, op+" "+net.IP(buf[28:32]).String()+" "+net.IP(buf[38:42]).String())
			w.mu.Unlock()
		}
	}()
	t.Cleanup(func() { close(stop); <-done; unix.Close(w.fd) })
	return w
}

func (w *arpWatch) has(s string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, x := range w.seen {
		if x == s {
			return true
		}
	}
	return false
}

// sendARPRequest broadcasts "who has tpa, tell spa" from a VM's eth0.
func sendARPRequest(t *testing.T, ns string, sha net.HardwareAddr, spa, tpa string) {
	t.Helper()
	if err := packetsock.Send(ns, VMDev, packetsock.ARPRequest(sha, spa, tpa)); err != nil {
		t.Fatal(err)
	}
}

// An ARP request for a VM at the other site is answered on the asking
// VM's node and never crosses the link; a request for an address nobody
// has still floods to the network's nodes (which proves the watch works).
func TestARPForKnownVMsStaysOnTheNode(t *testing.T) {
	s, err := spec.Parse([]byte(twoNodes))
	if err != nil {
		t.Fatal(err)
	}
	l := newLab(t, s, []byte(twoNodes))
	far := watchARP(t, l.NodeNS("epouta-c1"))
	near := watchARP(t, l.VMNS("k1"))
	k1, _ := net.ParseMAC("fa:16:3e:80:00:0a")
	sendARPRequest(t, l.VMNS("k1"), k1, "10.101.128.10", "10.101.0.10") // e1, at ePouta
	sendARPRequest(t, l.VMNS("k1"), k1, "10.101.128.10", "10.101.0.99") // nobody
	time.Sleep(500 * time.Millisecond)
	if !near.has("reply 10.101.0.10 10.101.128.10") {
		t.Error("k1's request for e1 was not answered")
	}
	if far.has("request 10.101.128.10 10.101.0.10") {
		t.Error("k1's request for e1, a known VM, crossed the link to epouta-c1")
	}
	if !far.has("request 10.101.128.10 10.101.0.99") {
		t.Error("a request for an unknown address did not flood to epouta-c1: the watch sees nothing")
	}
}
