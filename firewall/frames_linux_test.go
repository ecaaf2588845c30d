package firewall_test

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/bothnia/bothnia/firewall"
	"github.com/bothnia/bothnia/internal/packetsock"
	"github.com/bothnia/bothnia/namespace"
)

// wireFrame is a frame the differential test sends: the evaluator's view
// (firewall.Frame) and what goes on the wire, which carry the same facts.
type wireFrame struct {
	firewall.Frame
	DstMAC   string
	Marker   string // unique bytes in the payload (or the ARP target) that the receiver looks for
	ARPTpa   netip.Addr
	TCPFlags string // "S" (SYN), "SF" (SYN+FIN, INVALID) or "A" (an ACK with no connection: NotSYN)
	Fragment bool   // IPv4 sent as two fragments
	ID       uint16 // ICMP echo identifier, unique per frame so conntrack never joins two
}

// isND is a neighbour solicitation or advertisement: its marker is in
// the flow label, since anything after its options would make it a
// malformed message.
func (w *wireFrame) isND() bool {
	return w.EtherType == firewall.EtherIPv6 && w.Proto == 58 && (w.SPort == 135 || w.SPort == 136)
}

// nd makes the frame a well-formed neighbour discovery message with a
// target and options, marked by its flow label.
func (w *wireFrame) nd(target netip.Addr, opts ...firewall.NDOpt) *wireFrame {
	w.NDTarget, w.NDOpts = target, opts
	return w
}

// flowLabel is an ND frame's marker as a flow label: never 0, which is
// what the kernel's own neighbour discovery sends.
func (w *wireFrame) flowLabel() uint32 {
	var n uint32
	for _, c := range w.Marker {
		n = n*31 + uint32(c)
	}
	return n&0x7ffff | 0x80000
}

// key is what the receiver must see: the marker in a frame of the same
// protocol (and ICMP type), so that a kernel's echo reply or ICMP error
// quoting the marker never counts as the frame itself.
func (w *wireFrame) key() string {
	if w.EtherType == firewall.EtherARP {
		return w.Marker
	}
	if w.isND() {
		return fmt.Sprintf("ND%05x/58.%d", w.flowLabel(), w.SPort)
	}
	if w.Proto == 1 || w.Proto == 58 {
		return fmt.Sprintf("%s/%d.%d", w.Marker, w.Proto, w.SPort)
	}
	return fmt.Sprintf("%s/%d", w.Marker, w.Proto)
}

// bytes encodes the frame, or the two fragments of it.
func (w *wireFrame) bytes() ([][]byte, error) {
	mac := func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }
	eth := &layers.Ethernet{SrcMAC: mac(w.SrcMAC), DstMAC: mac(w.DstMAC)}
	var ls []gopacket.SerializableLayer
	ls = append(ls, eth)
	next := &eth.EthernetType
	for _, t := range w.Tags {
		*next = layers.EthernetType(t.TPID)
		tag := &layers.Dot1Q{VLANIdentifier: uint16(t.VID)}
		ls = append(ls, tag)
		next = &tag.Type
	}
	*next = layers.EthernetType(w.EtherType)
	payload := gopacket.Payload([]byte(w.Marker))
	if w.Fragment {
		payload = append(payload, make([]byte, 32)...)
	}
	switch w.EtherType {
	case firewall.EtherARP:
		ls = append(ls, &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: layers.ARPRequest, SourceHwAddress: mac(w.ARPSha), SourceProtAddress: w.ARPSpa.AsSlice(),
			DstHwAddress: make([]byte, 6), DstProtAddress: w.ARPTpa.AsSlice()})
		return serialize(ls)
	case firewall.EtherIPv4:
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocol(w.Proto), SrcIP: w.Src.AsSlice(), DstIP: w.Dst.AsSlice()}
		l4 := transport(w, ip)
		if w.Fragment {
			return fragments(ls, ip, l4, payload)
		}
		return serialize(append(append(ls, ip), append(l4, payload)...))
	case firewall.EtherIPv6:
		ip := &layers.IPv6{Version: 6, HopLimit: 255, NextHeader: layers.IPProtocol(w.Proto), SrcIP: w.Src.AsSlice(), DstIP: w.Dst.AsSlice()}
		if w.isND() {
			ip.FlowLabel = w.flowLabel()
			c := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(uint8(w.SPort), 0)}
			_ = c.SetNetworkLayerForChecksum(ip)
			return serialize(append(ls, ip, c, gopacket.Payload(ndBody(w))))
		}
		return serialize(append(append(ls, ip), append(transport(w, ip), payload)...))
	}
	return nil, fmt.Errorf("ethertype %#x", w.EtherType)
}

func transport(w *wireFrame, ip gopacket.NetworkLayer) []gopacket.SerializableLayer {
	switch w.Proto {
	case 6:
		t := &layers.TCP{SrcPort: layers.TCPPort(w.SPort), DstPort: layers.TCPPort(w.DPort), Seq: 1000, SYN: w.TCPFlags != "A", FIN: w.TCPFlags == "SF", ACK: w.TCPFlags == "A", Ack: 1, Window: 64240, DataOffset: 5}
		_ = t.SetNetworkLayerForChecksum(ip)
		return []gopacket.SerializableLayer{t}
	case 17:
		u := &layers.UDP{SrcPort: layers.UDPPort(w.SPort), DstPort: layers.UDPPort(w.DPort)}
		_ = u.SetNetworkLayerForChecksum(ip)
		return []gopacket.SerializableLayer{u}
	case 1:
		return []gopacket.SerializableLayer{&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(uint8(w.SPort), uint8(w.DPort)), Id: w.ID, Seq: 1}}
	case 58:
		c := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(uint8(w.SPort), uint8(w.DPort))}
		_ = c.SetNetworkLayerForChecksum(ip)
		// Echo (and every type here) takes 4 bytes after the checksum:
		// an id and sequence, or reserved bits.
		return []gopacket.SerializableLayer{c, gopacket.Payload([]byte{byte(w.ID >> 8), byte(w.ID), 0, 1})}
	}
	return nil // another protocol: the marker is the whole payload
}

// ndBody is what follows an ND message's checksum: flags (an
// advertisement overrides, as a poisoning one would), the target, the
// options; without a target, four bytes only, too short a message.
func ndBody(w *wireFrame) []byte {
	b := []byte{0, 0, 0, 0}
	if w.SPort == 136 {
		b[0] = 0x20
	}
	if !w.NDTarget.IsValid() {
		return b
	}
	b = append(b, w.NDTarget.AsSlice()...)
	for _, o := range w.NDOpts {
		m, _ := net.ParseMAC(o.MAC)
		b = append(append(b, byte(o.Type), 1), m...)
	}
	return b
}

func serialize(ls []gopacket.SerializableLayer) ([][]byte, error) {
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		return nil, err
	}
	return [][]byte{append([]byte(nil), buf.Bytes()...)}, nil
}

// fragments sends an IPv4 datagram as two fragments: its transport header
// and the first 16 bytes in one, the rest in the other. Conntrack
// reassembles them, so the groups decide on the whole datagram.
func fragments(link []gopacket.SerializableLayer, ip *layers.IPv4, l4 []gopacket.SerializableLayer, payload gopacket.Payload) ([][]byte, error) {
	// Serialize the whole datagram once to get the transport bytes with a
	// correct checksum.
	whole, err := serialize(append(append([]gopacket.SerializableLayer{ip}, l4...), payload))
	if err != nil {
		return nil, err
	}
	body := whole[0][20:]
	cut := 24
	if len(body) <= cut {
		return nil, fmt.Errorf("datagram too short to fragment")
	}
	var out [][]byte
	for i, part := range [][]byte{body[:cut], body[cut:]} {
		f := *ip
		f.Id = 0x4242
		if i == 0 {
			f.Flags = layers.IPv4MoreFragments
		} else {
			f.FragOffset = uint16(cut / 8)
		}
		b, err := serialize(append(append([]gopacket.SerializableLayer(nil), link...), &f, gopacket.Payload(part)))
		if err != nil {
			return nil, err
		}
		out = append(out, b...)
	}
	return out, nil
}

// capture records, per VM, every marker that arrives on its eth0.
type capture struct {
	mu   sync.Mutex
	got  map[string]map[string]bool // vm -> marker
	stop atomic.Bool
	wg   sync.WaitGroup
}

func newCapture(t *testing.T, nsOf func(string) string, vms []string, markers func([]byte) []string) *capture {
	c := &capture{got: map[string]map[string]bool{}}
	for _, vm := range vms {
		// A close does not wake a blocked recvfrom, and the number would be
		// reused by the next socket: the reader polls a stop flag instead
		// and closes its own socket.
		fd, _, err := packetsock.Open(nsOf(vm), "eth0", unix.ETH_P_ALL, 50*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		c.got[vm] = map[string]bool{}
		c.wg.Add(1)
		go func(vm string, fd int) {
			defer c.wg.Done()
			defer unix.Close(fd)
			buf := make([]byte, 4096)
			for !c.stop.Load() {
				n, from, err := unix.Recvfrom(fd, buf, 0)
				if err != nil {
					continue
				}
				if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
					continue
				}
				ms := markers(buf[:n])
				c.mu.Lock()
				for _, m := range ms {
					c.got[vm][m] = true
				}
				c.mu.Unlock()
			}
		}(vm, fd)
	}
	t.Cleanup(func() {
		c.stop.Store(true)
		c.wg.Wait()
	})
	return c
}

// newNodeCapture records, per node, every marker delivered to the node's
// own stack: raw IP sockets of each protocol the test sends, which get a
// copy of what passed the input hook. Each packet is given a stand-in
// Ethernet header (and, for IPv6, whose raw sockets deliver no header, an
// IPv6 header) so that findMarkers reads it like a frame.
func newNodeCapture(t *testing.T, nsOf func(string) string, nodes []string) *capture {
	c := &capture{got: map[string]map[string]bool{}}
	for _, node := range nodes {
		c.got["node:"+node] = map[string]bool{}
		for _, fp := range []struct{ fam, proto int }{
			{unix.AF_INET, 1}, {unix.AF_INET, 6}, {unix.AF_INET, 17}, {unix.AF_INET, 50},
			{unix.AF_INET6, 58}, {unix.AF_INET6, 6}, {unix.AF_INET6, 17}, {unix.AF_INET6, 50},
		} {
			var fd int
			err := namespace.Do(nsOf(node), func() error {
				var err error
				fd, err = unix.Socket(fp.fam, unix.SOCK_RAW, fp.proto)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 50000})
			c.wg.Add(1)
			go func(key string, fd int, v6 bool, proto int) {
				defer c.wg.Done()
				defer unix.Close(fd)
				buf := make([]byte, 4096)
				for !c.stop.Load() {
					n, _, err := unix.Recvfrom(fd, buf, 0)
					if err != nil {
						continue
					}
					frame := make([]byte, 14, 14+40+n)
					frame[12], frame[13] = 0x08, 0x00
					if v6 {
						frame[12], frame[13] = 0x86, 0xdd
						ip := make([]byte, 40)
						ip[0], ip[6] = 0x60, byte(proto)
						frame = append(frame, ip...)
					}
					ms := findMarkers(append(frame, buf[:n]...))
					c.mu.Lock()
					for _, m := range ms {
						c.got[key][m] = true
					}
					c.mu.Unlock()
				}
			}("node:"+node, fd, fp.fam == unix.AF_INET6, fp.proto)
		}
	}
	t.Cleanup(func() {
		c.stop.Store(true)
		c.wg.Wait()
	})
	return c
}

func (c *capture) saw(vm, marker string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.got[vm][marker]
}

// findMarkers returns the keys of a frame (see wireFrame.key): "BN" and 10
// hex digits in the payload with the frame's protocol, or an ARP request's
// sender and target.
func findMarkers(b []byte) []string {
	var out []string
	proto := frameProto(b)
	if i := ndAt(b); i > 0 {
		label := uint32(b[i+1]&0x0f)<<16 | uint32(b[i+2])<<8 | uint32(b[i+3])
		out = append(out, fmt.Sprintf("ND%05x/%s", label, proto))
	}
	for i := 0; i+12 <= len(b); i++ {
		if b[i] == 'B' && b[i+1] == 'N' && bytes.IndexFunc(b[i+2:i+12], func(r rune) bool { return !isHex(r) }) < 0 {
			out = append(out, string(b[i:i+12])+"/"+proto)
		}
	}
	if len(b) >= 42 && b[12] == 0x08 && b[13] == 0x06 {
		spa, _ := netip.AddrFromSlice(b[28:32])
		tpa, _ := netip.AddrFromSlice(b[38:42])
		out = append(out, "arp "+net.HardwareAddr(b[22:28]).String()+" "+spa.String()+" "+tpa.String())
	}
	return out
}

// frameProto is "<protocol>" or, for ICMP, "<protocol>.<type>" of the IP
// packet in a frame (after any VLAN tags).
func frameProto(b []byte) string {
	i := 12
	for i+2 <= len(b) && (b[i] == 0x81 && b[i+1] == 0x00 || b[i] == 0x88 && b[i+1] == 0xa8) {
		i += 4
	}
	if i+2 > len(b) {
		return ""
	}
	et := int(b[i])<<8 | int(b[i+1])
	ip := b[i+2:]
	var proto, l4 int
	switch {
	case et == firewall.EtherIPv4 && len(ip) >= 20:
		proto, l4 = int(ip[9]), int(ip[0]&0x0f)*4
	case et == firewall.EtherIPv6 && len(ip) >= 40:
		proto, l4 = int(ip[6]), 40
	default:
		return ""
	}
	if (proto == 1 || proto == 58) && len(ip) > l4 {
		return fmt.Sprintf("%d.%d", proto, ip[l4])
	}
	return fmt.Sprint(proto)
}

// ndAt is the offset of the IPv6 header of a neighbour solicitation or
// advertisement in a frame, or 0.
func ndAt(b []byte) int {
	i := 12
	for i+2 <= len(b) && (b[i] == 0x81 && b[i+1] == 0x00 || b[i] == 0x88 && b[i+1] == 0xa8) {
		i += 4
	}
	if i+2+41 > len(b) || b[i] != 0x86 || b[i+1] != 0xdd || b[i+2+6] != 58 || (b[i+2+40] != 135 && b[i+2+40] != 136) {
		return 0
	}
	return i + 2
}

func isHex(r rune) bool { return r >= '0' && r <= '9' || r >= 'a' && r <= 'f' }

// sendFrames writes raw frames on a VM's eth0.
func sendFrames(t *testing.T, ns string, frames [][]byte) {
	if err := packetsock.Send(ns, "eth0", frames...); err != nil {
		t.Fatal(err)
	}
}
