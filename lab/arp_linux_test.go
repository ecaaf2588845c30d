package lab

import (
	"encoding/binary"
	"net"
	"os/exec"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bothnia/bothnia/internal/packetsock"
	"github.com/bothnia/bothnia/namespace"
	"github.com/bothnia/bothnia/plan"
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

// A frame from the link that claims a MAC of this node's VM (a switch
// reflecting a flood back, as the seed's fibre did; another site's
// forgery) moves nothing: the uplink learns no MAC, so the VM stays where
// its tap is and the other site still reaches it. Before, the bridge
// learnt the MAC on the uplink and dropped what came for the VM.
func TestAFrameFromTheLinkMovesNoLocalMAC(t *testing.T) {
	s, err := spec.Parse([]byte(twoNodes))
	if err != nil {
		t.Fatal(err)
	}
	l := newLab(t, s, []byte(twoNodes))
	ls, err := LabSpec(s)
	if err != nil {
		t.Fatal(err)
	}
	p, err := plan.Compile(ls)
	if err != nil {
		t.Fatal(err)
	}
	k1, _ := net.ParseMAC("fa:16:3e:80:00:0a")
	var tap, br string
	for _, n := range p.Nodes {
		for _, port := range n.Ports {
			if port.VM == "k1" {
				tap, br = port.Name, port.Bridge
			}
		}
	}
	frame := append(append([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, k1...), 0x88, 0xb5)
	frame = append(frame, make([]byte, 46)...)
	if err := packetsock.Send(l.NodeNS("epouta-c1"), plan.VXLANName(1203), frame); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if got := fdbPort(t, l.NodeNS("knox-ctl"), br, k1); got != tap {
		t.Errorf("knox-ctl forwards k1's MAC to %q after a frame from the link claimed it, want k1's tap %s", got, tap)
	}
	out, err := exec.Command("ip", "netns", "exec", l.VMNS("e1"), "ping", "-c", "1", "-W", "1", "10.101.128.10").CombinedOutput()
	if err != nil {
		t.Errorf("e1 no longer reaches k1: %v\n%s", err, out)
	}
}

// fdbPort is the port of bridge br that its table sends mac to.
func fdbPort(t *testing.T, ns, br string, mac net.HardwareAddr) string {
	t.Helper()
	h, nsh, err := namespace.Netlink(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer nsh.Close()
	defer h.Close()
	bl, err := h.LinkByName(br)
	if err != nil {
		t.Fatal(err)
	}
	ns2, err := h.NeighList(0, unix.AF_BRIDGE)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range ns2 {
		if n.MasterIndex != bl.Attrs().Index || n.HardwareAddr.String() != mac.String() {
			continue
		}
		if port, err := h.LinkByIndex(n.LinkIndex); err == nil {
			return port.Attrs().Name
		}
	}
	return ""
}
