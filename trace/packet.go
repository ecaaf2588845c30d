package trace

import (
	"net"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
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

// Frame is IPv4Packet in an Ethernet frame from src to dst.
func (t *Trace) Frame(src, dst net.HardwareAddr) ([]byte, error) {
	pkt, err := t.IPv4Packet()
	if err != nil {
		return nil, err
	}
	frame := append(append(append([]byte{}, dst...), src...), 0x08, 0x00)
	return append(frame, pkt...), nil
}
