package spec

import (
	"github.com/google/uuid"
)

// idSpace scopes the name-based UUIDs bothnia derives for objects the spec
// names but does not number (networks, ports, routers), so the same spec
// always yields the same device names on every node and every run.
var idSpace = uuid.MustParse("6b1d3c52-2f5e-4b7e-9a41-0d6f1c3e8a27")

// DeriveID returns a stable UUID for a kind of object and its name.
func DeriveID(kind, name string) string {
	return uuid.NewSHA1(idSpace, []byte(kind+"/"+name)).String()
}

// NetworkID is a network's Neutron-style UUID: the spec's, or one derived
// from the fabric's and the network's names.
func (s *Spec) NetworkID(n *Network) string {
	if n.ID != "" {
		return n.ID
	}
	return DeriveID("network", s.Fabric.Name+"/"+n.Name)
}

// PortID is a VM port's UUID: the spec's, or one derived from its names.
func (s *Spec) PortID(n *Network, vm *VM) string {
	if vm.PortID != "" {
		return vm.PortID
	}
	return DeriveID("port", s.Fabric.Name+"/"+n.Name+"/"+vm.Name)
}

// DeviceIDLen is how much of a UUID names a device: Neutron names bridges
// and taps by a prefix and the first 11 characters (IFNAMSIZ is 15), so
// two IDs that share them share a device.
const DeviceIDLen = 11

// validID checks an explicit Neutron ID: a UUID in its canonical form.
func validID(id string) bool {
	u, err := uuid.Parse(id)
	return err == nil && len(id) == 36 && u.String() == id
}
