package spec

import (
	"fmt"
	"net"
	"strings"
)

// networks checks the networks and their VMs: names, IDs and the devices
// they name, segments, ports (MAC, address in the VM's own site's half,
// nothing claimed twice). It returns how many ports have port security.
func (v *validator) networks(s *Spec, nodeRef func(field, node string)) (secured int) {
	fabric, fabricOK := v.fabric, v.fabricOK
	segments := map[int]string{}
	bridges, taps, portIDs := map[string]string{}, map[string]string{}, map[string]string{}
	for i, n := range s.Networks {
		f := fmt.Sprintf("networks[%d]", i)
		v.uniqueName("network", f+".name", n.Name)
		obj := fmt.Sprintf("%s (%s)", f, n.Name)
		if n.ID != "" && !validID(n.ID) {
			v.addf(f+".id", "%q is not a Neutron network UUID such as 1a6abf7e-f927-4598-9a6c-c4311e685e52 (lowercase); leave it out to derive one", n.ID)
		} else if id := s.NetworkID(n); id != "" {
			// Two networks on one bridge would be one L2 segment: two
			// projects merged.
			dev := "brq" + id[:DeviceIDLen]
			if prev, ok := bridges[dev]; ok {
				v.addf(f+".id", "its bridge %s is also %s's: the two networks would share one segment; give one of them another ID", dev, prev)
			}
			bridges[dev] = obj
		}
		max := 4094
		if s.Link.Mode == "vxlan" {
			max = 1<<24 - 1
		}
		if n.Segment < 1 || n.Segment > max {
			v.addf(f+".segment", "%d is outside 1-%d", n.Segment, max)
		} else if prev, ok := segments[n.Segment]; ok {
			v.addf(f+".segment", "segment %d is already used by %s; each network needs its own", n.Segment, prev)
		} else {
			segments[n.Segment] = f
		}
		// A network without VMs is valid: a cloud's network before its
		// first VM boots. Only the router and DHCP servers sit on it then.
		for j, vm := range n.VMs {
			vf := fmt.Sprintf("%s.vms[%d]", f, j)
			v.uniqueName("vm", vf+".name", vm.Name)
			vobj := fmt.Sprintf("%s (%s)", vf, vm.Name)
			if vm.PortID != "" && !validID(vm.PortID) {
				v.addf(vf+".port_id", "%q is not a Neutron port UUID such as b83935a5-3012-4c1e-9a5e-6f0d2c3b4a10 (lowercase); leave it out to derive one", vm.PortID)
			} else if id := s.PortID(n, vm); id != "" {
				if prev, ok := portIDs[id]; ok {
					v.addf(vf+".port_id", "%s is also %s's port ID; each port needs its own", id, prev)
				} else if dev := "tap" + id[:DeviceIDLen]; taps[dev] != "" {
					v.addf(vf+".port_id", "its tap %s is also %s's: the two ports would share one device; give one of them another port ID", dev, taps[dev])
				}
				portIDs[id] = vobj
				taps["tap"+id[:DeviceIDLen]] = vobj
			}
			if vm.Secured() {
				secured++
			}
			nodeRef(vf+".node", vm.Node)
			if hw, err := net.ParseMAC(vm.MAC); err != nil || len(hw) != 6 {
				v.addf(vf+".mac", "%q is not a MAC address such as fa:16:3e:00:00:01", vm.MAC)
			} else if hw[0]&1 == 1 {
				v.addf(vf+".mac", "%s is a multicast address; a port needs a unicast MAC", hw)
			} else if isZeroMAC(hw) {
				v.addf(vf+".mac", "%s is the all-zero MAC, which no interface may send from (bridges drop it); use one such as fa:16:3e:00:00:01", hw)
			} else {
				k := strings.ToLower(hw.String())
				if prev, ok := v.macs[k]; ok {
					v.addf(vf+".mac", "%s is already used by %s", hw, prev)
				}
				v.macs[k] = vf + ".mac"
			}
			v.port(s, vf, vm)
			a, ok := v.addr(vf+".ip", vm.IP)
			if !ok {
				continue
			}
			if fabricOK && !fabric.Contains(a) {
				v.addf(vf+".ip", "%s lies outside the fabric %s", a, fabric)
			}
			if fabricOK && (a == fabric.Addr() || a == lastAddr(fabric)) {
				v.addf(vf+".ip", "%s is the fabric %s's network or broadcast address; no host may use it", a, fabric)
			}
			site := s.NodeSite(vm.Node)
			if h, ok := v.halves[site]; ok && !h.Contains(a) {
				if other := v.siteOf(a); other != "" {
					v.addf(vf+".ip", "%s lies in %s's half %s, but node %s is in %s (%s); pick an address of %s", a, other, v.halves[other], vm.Node, site, h, h)
				} else {
					v.addf(vf+".ip", "%s lies outside %s's half %s", a, site, h)
				}
			}
			v.claim(n.Name, vf+".ip", a)
		}
	}

	return secured
}
