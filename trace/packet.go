package trace

import (
	"fmt"
	"net"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/bothnia/bothnia/spec"
)

// IPv4Packet is the IPv4 packet a trace describes, header and all, as
// trace --kernel sends a forged one.
func (t *Trace) IPv4Packet() ([]byte, error) {
	ip := &layers.IPv4{Version: 4, TTL: 64, SrcIP: t.Src.AsSlice(), DstIP: t.Dst.AsSlice(), Protocol: layers.IPProtocol(t.Proto)}
	var payload []gopacket.SerializableLayer
	switch t.Proto {
	case 6:
		tcp := &layers.TCP{SrcPort: 40000, DstPort: layers.TCPPort(t.DPort), SYN: true, Seq: 1, Window: 64240}
		_ = tcp.SetNetworkLayerForChecksum(ip)
		payload = []gopacket.SerializableLayer{ip, tcp}
	case 17:
		udp := &layers.UDP{SrcPort: 40000, DstPort: layers.UDPPort(t.DPort)}
		_ = udp.SetNetworkLayerForChecksum(ip)
		payload = []gopacket.SerializableLayer{ip, udp, gopacket.Payload("bothnia trace")}
	default:
		payload = []gopacket.SerializableLayer{ip, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0), Id: 1, Seq: 1}, gopacket.Payload("bothnia trace")}
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true}, payload...); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Frame is IPv4Packet in the Ethernet frame trace --kernel sends for a
// forged packet: from the request's source MAC (the VM's own if it forges
// none), to the target VM's MAC, or to broadcast when the target is not a
// VM of the spec.
func (t *Trace) Frame(s *spec.Spec, r Request) ([]byte, error) {
	vm, _ := s.VM(r.From)
	if vm == nil {
		return nil, fmt.Errorf("trace --kernel: no VM %s", r.From)
	}
	srcMAC := vm.MAC
	if r.SrcMAC != "" {
		srcMAC = r.SrcMAC
	}
	src, err := net.ParseMAC(srcMAC)
	if err != nil {
		return nil, fmt.Errorf("trace --kernel: source MAC %q: %w", srcMAC, err)
	}
	dst := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	if to, _ := s.VM(r.To); to != nil {
		if dst, err = net.ParseMAC(to.MAC); err != nil {
			return nil, err
		}
	}
	pkt, err := t.IPv4Packet()
	if err != nil {
		return nil, err
	}
	frame := append(append(append([]byte{}, dst...), src...), 0x08, 0x00)
	return append(frame, pkt...), nil
}
