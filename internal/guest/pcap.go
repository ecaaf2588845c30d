package guest

import (
	"encoding/binary"
	"fmt"
	"os"
)

// Frame is one Ethernet frame of a capture.
type Frame []byte

// ReadPcap reads the frames of a pcap file (as qemu's filter-dump writes
// it: little-endian, microseconds, Ethernet). A record cut short at the
// end, still being written, is left out.
func ReadPcap(path string) ([]Frame, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b) < 24 {
		return nil, fmt.Errorf("pcap %s: %d bytes, no header", path, len(b))
	}
	var bo binary.ByteOrder
	switch binary.LittleEndian.Uint32(b) {
	case 0xa1b2c3d4, 0xa1b23c4d:
		bo = binary.LittleEndian
	case 0xd4c3b2a1, 0x4d3cb2a1:
		bo = binary.BigEndian
	default:
		return nil, fmt.Errorf("pcap %s: not a pcap file", path)
	}
	if lt := bo.Uint32(b[20:]); lt != 1 {
		return nil, fmt.Errorf("pcap %s: link type %d, want Ethernet (1)", path, lt)
	}
	var out []Frame
	for off := 24; off+16 <= len(b); {
		incl := int(bo.Uint32(b[off+8:]))
		if off+16+incl > len(b) {
			break
		}
		out = append(out, Frame(b[off+16:off+16+incl]))
		off += 16 + incl
	}
	return out, nil
}

// Ethernet types.
const (
	EtherVLAN = 0x8100
	EtherQinQ = 0x88a8
	EtherARP  = 0x0806
	EtherIPv4 = 0x0800
)

// VLANs are a frame's 802.1Q tags, outermost first (VLAN IDs), and the
// Ethernet type after them.
func (f Frame) VLANs() (ids []int, etherType int) {
	off := 12
	for off+4 <= len(f) {
		t := int(binary.BigEndian.Uint16(f[off:]))
		if t != EtherVLAN && t != EtherQinQ {
			return ids, t
		}
		ids = append(ids, int(binary.BigEndian.Uint16(f[off+2:])&0x0fff))
		off += 4
	}
	return ids, -1
}

// Src and Dst are the frame's MAC addresses.
func (f Frame) Src() string { return macString(f[6:12]) }
func (f Frame) Dst() string { return macString(f[0:6]) }

func macString(b []byte) string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3], b[4], b[5])
}

// Payload is what follows the Ethernet header and its tags.
func (f Frame) Payload() []byte {
	ids, _ := f.VLANs()
	off := 14 + 4*len(ids)
	if off > len(f) {
		return nil
	}
	return f[off:]
}

// Tally counts a capture's frames by their outer VLAN ID (0 untagged),
// and the frames carrying more than one tag.
type Tally struct {
	ByVID  map[int]int
	Double int
}

// Count tallies frames.
func Count(frames []Frame) Tally {
	t := Tally{ByVID: map[int]int{}}
	for _, f := range frames {
		if len(f) < 14 {
			continue
		}
		ids, _ := f.VLANs()
		switch {
		case len(ids) == 0:
			t.ByVID[0]++
		default:
			t.ByVID[ids[0]]++
			if len(ids) > 1 {
				t.Double++
			}
		}
	}
	return t
}
