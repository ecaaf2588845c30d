package plan

import (
	"crypto/sha256"
	"fmt"
	"net"

	"github.com/bothnia/bothnia/spec"
)

// DeriveID returns a stable UUID for a kind of object and its name.
func DeriveID(kind, name string) string { return spec.DeriveID(kind, name) }

// Neutron names devices by a prefix and the first 11 characters of the
// object's UUID, which keeps them within IFNAMSIZ (15); we do the same so
// operators who know Neutron read bothnia hosts at once.
func short(id string) string { return id[:spec.DeviceIDLen] }

// BridgeName is the per-network bridge, brq<network id>.
func BridgeName(netID string) string { return "brq" + short(netID) }

// TapName is a port's host-side device, tap<port id>.
func TapName(portID string) string { return "tap" + short(portID) }

// VXLANName is the per-segment tunnel device, as Neutron's linuxbridge agent names it.
func VXLANName(vni int) string { return fmt.Sprintf("vxlan-%d", vni) }

// VLANName is the per-segment VLAN device, em1.1203.
func VLANName(parent string, id int) string { return fmt.Sprintf("%s.%d", parent, id) }

// BridgeMAC is a fixed, locally administered MAC for a network's bridge on
// one node. The seed's bridges took the lowest MAC of their ports, so the
// bridge's own address moved whenever a VM came or went and the FDB pointed
// at the wrong port; the seed turned learning off (ageing 0, a hub). A
// bridge whose MAC is set at creation never changes it, so learning can stay
// on. The node is part of the hash so that two bridges of one network never
// share a MAC should an operator give them addresses.
func BridgeMAC(netID, node string) string {
	return localMAC("bridge/" + netID + "/" + node)
}

// InfraMAC is the MAC of a router or DHCP port. It carries Neutron's fa:16:3e
// prefix, as the ports Neutron creates do.
func InfraMAC(portID string) string {
	h := sha256.Sum256([]byte("port/" + portID))
	return net.HardwareAddr{0xfa, 0x16, 0x3e, h[0], h[1], h[2]}.String()
}

func localMAC(seed string) string {
	h := sha256.Sum256([]byte(seed))
	// 0x02: locally administered, unicast.
	return net.HardwareAddr{0x02, h[0], h[1], h[2], h[3], h[4]}.String()
}
