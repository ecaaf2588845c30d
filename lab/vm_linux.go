package lab

import (
	"crypto/sha256"
	"fmt"
	"net"
	"net/netip"

	"go.yaml.in/yaml/v3"

	"github.com/bothnia/bothnia/namespace"
	"github.com/bothnia/bothnia/spec"
)

// NewVM describes a VM to add to a running lab. IP and MAC are chosen
// when empty: the first free address of the node's site pools in that
// network, and a fa:16:3e MAC derived from the name.
type NewVM struct {
	Name, Network, Node string
	IP, MAC             string
	SecurityGroups      []string
}

// AddVM boots a VM in the running lab as a cloud would: the spec gains
// the port, the lab plugs its tap (the hypervisor's part), the store gets
// the port and every agent converges, and the VM gets its lease. The
// spec the lab records is updated, so "lab up" keeps it.
func (l *Lab) AddVM(v NewVM) (*spec.Spec, error) {
	unlock, err := l.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	s, err := l.Spec()
	if err != nil {
		return nil, err
	}
	n := s.Network(v.Network)
	if n == nil {
		return nil, fmt.Errorf("lab: no network %q; the spec has %v", v.Network, networkNames(s))
	}
	if v.IP == "" {
		if v.IP, err = freeIP(s, n, v.Node); err != nil {
			return nil, err
		}
	}
	if v.MAC == "" {
		h := sha256.Sum256([]byte("vm/" + v.Name))
		v.MAC = net.HardwareAddr{0xfa, 0x16, 0x3e, h[0], h[1], h[2]}.String()
	}
	n.VMs = append(n.VMs, &spec.VM{Name: v.Name, Node: v.Node, IP: v.IP, MAC: v.MAC, SecurityGroups: v.SecurityGroups})
	return l.reup(s)
}

// DelVM removes a VM: the store loses its port first (so every agent
// removes its elements and cuts its connections), then the lab unplugs it.
func (l *Lab) DelVM(name string) (*spec.Spec, error) {
	unlock, err := l.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	s, err := l.Spec()
	if err != nil {
		return nil, err
	}
	found := false
	for _, n := range s.Networks {
		for i, vm := range n.VMs {
			if vm.Name == name {
				n.VMs = append(n.VMs[:i], n.VMs[i+1:]...)
				found = true
				break
			}
		}
	}
	if !found {
		return nil, fmt.Errorf("lab: no VM %q in the running lab", name)
	}
	s2, err := l.reup(s)
	if err != nil {
		return s2, err
	}
	return s2, namespace.Delete(l.VMNS(name))
}

// reup validates the edited spec and brings the lab to it.
func (l *Lab) reup(s *spec.Spec) (*spec.Spec, error) {
	b, err := yaml.Marshal(s)
	if err != nil {
		return nil, err
	}
	s2, err := spec.Parse(b)
	if err != nil {
		return nil, err
	}
	l.Agents = l.Agents || l.AgentsRunning()
	_, err = l.up(s2, b)
	return s2, err
}

func networkNames(s *spec.Spec) []string {
	var out []string
	for _, n := range s.Networks {
		out = append(out, n.Name)
	}
	return out
}

// freeIP is the first address of the node's site pools that nothing in
// the network (nor the router, DHCP or DNS) uses.
func freeIP(s *spec.Spec, n *spec.Network, node string) (string, error) {
	site := s.NodeSite(node)
	if site == "" {
		return "", fmt.Errorf("lab: no node %q in the spec", node)
	}
	used := map[netip.Addr]bool{}
	for _, vm := range n.VMs {
		if a, err := netip.ParseAddr(vm.IP); err == nil {
			used[a] = true
		}
	}
	for _, sn := range s.SiteNames() {
		if d := s.Sites[sn].DHCP; d != nil {
			for _, srv := range d.Servers() {
				used[netip.MustParseAddr(srv.Address)] = true
			}
		}
	}
	if s.Router != nil {
		used[netip.MustParseAddr(s.Router.Address)] = true
	}
	for _, ps := range s.Sites[site].Pools {
		r, err := spec.ParseRange(ps)
		if err != nil {
			continue
		}
		for a := r.First; !r.Last.Less(a); a = a.Next() {
			if !used[a] {
				return a.String(), nil
			}
		}
	}
	return "", fmt.Errorf("lab: the pools of site %s have no free address in network %s", site, n.Name)
}
