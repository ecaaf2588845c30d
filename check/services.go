package check

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/bothnia/bothnia/spec"
)

// Service is one check of DHCP or DNS as a VM sees it: what the spec says
// the VM must get, and what it got.
type Service struct {
	Kind string // dhcp, dns
	VM   string
	What string
	Want string
	Got  string
}

// OK reports whether the VM got what the spec says: Want, or one of
// Want's alternatives ("a or b": a site with two DHCP servers).
func (c Service) OK() bool {
	return c.Want == c.Got || slices.Contains(strings.Split(c.Want, " or "), c.Got)
}

// ExternalName is the name the lab's outside resolver answers, so that
// check can follow a query through the fabric's forwarder and the router.
const ExternalName = "www.example.org."

// ExternalAddr is what the outside resolver answers for ExternalName.
var ExternalAddr = netip.MustParseAddr("203.0.113.80")

// LeaseWant is what a VM's DHCP lease must say, field by field, as the
// lab's client script records it.
func LeaseWant(s *spec.Spec, vm *spec.VM) map[string]string {
	want := map[string]string{
		"ip":       vm.IP,
		"mask":     fmt.Sprint(netip.MustParsePrefix(s.Fabric.CIDR).Bits()),
		"mtu":      fmt.Sprint(s.NetworkMTU()),
		"serverid": serverIDs(s.Sites[s.NodeSite(vm.Node)].DHCP),
		"hostname": vm.Name,
		"domain":   strings.TrimSuffix(s.Fabric.Domain, "."),
	}
	if s.Router != nil {
		want["router"] = s.Router.Address
	}
	if s.DNS != nil {
		want["dns"] = strings.Join(s.DNS.Addresses(), " ")
	}
	return want
}

// serverIDs is the server a VM's lease may come from: any of its site's.
func serverIDs(d *spec.DHCP) string {
	var out []string
	for _, srv := range d.Servers() {
		out = append(out, srv.Address)
	}
	return strings.Join(out, " or ")
}

// DNSWant lists, for a VM, the names it must resolve and their answers:
// every other VM of its network by name (whichever site), its own address
// backwards, and the external name through the forwarder.
func DNSWant(s *spec.Spec, n *spec.Network, vm *spec.VM) [][2]string {
	domain := strings.TrimSuffix(s.Fabric.Domain, ".")
	var out [][2]string
	for _, o := range n.VMs {
		if o.Name != vm.Name {
			out = append(out, [2]string{"A " + o.Name + "." + domain + ".", o.IP})
		}
	}
	out = append(out, [2]string{"PTR " + vm.IP, vm.Name + "." + domain + "."})
	if s.DNS != nil && len(s.DNS.Forwarders) > 0 {
		out = append(out, [2]string{"A " + ExternalName, ExternalAddr.String()})
	}
	return out
}

// FailedServices counts service checks that differ.
func FailedServices(cs []Service) int {
	n := 0
	for _, c := range cs {
		if !c.OK() {
			n++
		}
	}
	return n
}

// ServiceTable renders the service checks, failures first.
func ServiceTable(cs []Service) string {
	sort.SliceStable(cs, func(i, j int) bool { return !cs[i].OK() && cs[j].OK() })
	var b strings.Builder
	w := 0
	for _, c := range cs {
		if l := len(c.What); l > w {
			w = l
		}
	}
	for _, c := range cs {
		mark := "ok  "
		got := ""
		if !c.OK() {
			mark, got = "FAIL", "  got "+c.Got
		}
		fmt.Fprintf(&b, "%s %-4s %-12s %-*s %s%s\n", mark, c.Kind, c.VM, w, c.What, c.Want, got)
	}
	fail := FailedServices(cs)
	fmt.Fprintf(&b, "%d service checks, %d passed, %d failed\n", len(cs), len(cs)-fail, fail)
	return b.String()
}
