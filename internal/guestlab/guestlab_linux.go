// Package guestlab runs a fabric on Debian guests (package guest), one
// guest per node, for what the lab's namespaces cannot show on this
// machine's kernel: the seed's VLAN 1203, where each node's em1 is a NIC
// on an emulated fibre and bothnia's applier makes em1.<segment> on it.
//
// Inside a guest everything is as on a real host: the guest's own network
// namespace is the node's, "bothnia apply" converges it, bothnia's DHCP
// and DNS servers run in their namespaces. The guest plays what a site
// already has, as the lab does: each VM is a namespace (vm-<name>) whose
// eth0 is paired with the tap the plan plugs, configured by busybox's
// udhcpc where a DHCP server serves it; the router's node has the outside
// behind it (namespace outside, holding the allowlisted and blocked
// endpoints).
package guestlab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/bothnia/bothnia/check"
	"github.com/bothnia/bothnia/internal/guest"
	"github.com/bothnia/bothnia/internal/guest/wire"
	"github.com/bothnia/bothnia/lab"
	"github.com/bothnia/bothnia/node"
	"github.com/bothnia/bothnia/spec"
)

// Names inside a guest.
const (
	NSPrefix   = "bn-"     // bothnia's namespaces (apply's default)
	OutsideNS  = "outside" // behind the router's node
	SpecFile   = "/host/spec.yaml"
	Fibre      = "fibre" // the cluster segment every em1 is on
	UpstreamIP = "100.64.0.1/30"
	OutsideIP  = "100.64.0.2/30"
)

// VMNS is a VM's namespace in its node's guest.
func VMNS(vm string) string { return "vm-" + vm }

// Fabric is a spec running on guests.
type Fabric struct {
	Spec    *spec.Spec
	Desired *node.Fabric
	Cluster *guest.Cluster
	// NodeOf is the guest of each VM.
	NodeOf map[string]string
}

// EM1 is the MAC of the i-th node's em1 (locally administered).
func EM1(i int) string { return fmt.Sprintf("52:54:00:b0:00:%02x", i+1) }

// Start boots one guest per node of the spec (every site managed) and
// brings the fabric up: VMs, apply, services, DHCP clients.
func Start(ctx context.Context, prefix string, img guest.Image, share string, s *spec.Spec, specYAML []byte) (*Fabric, error) {
	d, err := node.Desired(s)
	if err != nil {
		return nil, err
	}
	f := &Fabric{Spec: s, Desired: d, NodeOf: map[string]string{}}
	var cfgs []guest.Config
	for i, n := range s.NodeNames() {
		cfgs = append(cfgs, guest.Config{Name: n, NICs: []guest.NIC{{Segment: Fibre, MAC: EM1(i)}}})
	}
	for _, n := range s.Networks {
		for _, vm := range n.VMs {
			f.NodeOf[vm.Name] = vm.Node
		}
	}
	if err := os.WriteFile(filepath.Join(share, "spec.yaml"), specYAML, 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(share, "udhcpc.script"), []byte(lab.DHCPScript), 0o755); err != nil {
		return nil, err
	}
	c, err := guest.Start(ctx, guest.Options{Prefix: prefix, Image: img, Share: share, Bothnia: true, Guests: cfgs})
	if err != nil {
		return nil, err
	}
	f.Cluster = c
	if err := f.up(ctx); err != nil {
		return f, err
	}
	return f, nil
}

// Close stops the guests.
func (f *Fabric) Close() {
	if f.Cluster != nil {
		f.Cluster.Close()
	}
}

// Guest is a node's guest.
func (f *Fabric) Guest(node string) *guest.Guest { return f.Cluster.Guest(node) }

// VMGuest is the guest a VM runs on.
func (f *Fabric) VMGuest(vm string) *guest.Guest { return f.Guest(f.NodeOf[vm]) }

// each runs fn for every node's guest at once.
func (f *Fabric) each(fn func(st *node.State, g *guest.Guest) error) error {
	var wg sync.WaitGroup
	errs := make([]error, len(f.Desired.Nodes))
	for i, st := range f.Desired.Nodes {
		wg.Add(1)
		go func(i int, st *node.State) {
			defer wg.Done()
			if err := fn(st, f.Guest(st.Name)); err != nil {
				errs[i] = fmt.Errorf("%s: %w", st.Name, err)
			}
		}(i, st)
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (f *Fabric) up(ctx context.Context) error {
	dhcpVMs := lab.DHCPVMs(f.Spec)
	return f.each(func(st *node.State, g *guest.Guest) error {
		var b strings.Builder
		b.WriteString("set -e\nsysctl -qw net.ipv4.ip_forward=1\n")
		// The hypervisor's part: each VM's eth0 paired with its tap.
		for _, p := range st.Plan.Ports {
			ns := VMNS(p.VM)
			fmt.Fprintf(&b, "ip netns add %s\nip -n %s link set lo up\n", ns, ns)
			fmt.Fprintf(&b, "ip link add %s type veth peer name eth0 netns %s\n", p.Name, ns)
			fmt.Fprintf(&b, "ip -n %s link set eth0 address %s\n", ns, p.MAC)
			if !dhcpVMs[p.VM] {
				fmt.Fprintf(&b, "ip -n %s link set eth0 mtu %d\nip -n %s addr add %s dev eth0\n", ns, p.MTU, ns, p.IP)
			}
			fmt.Fprintf(&b, "ip -n %s link set eth0 up\n", ns)
			if !dhcpVMs[p.VM] && p.Gateway != "" {
				fmt.Fprintf(&b, "ip -n %s route add default via %s dev eth0\n", ns, p.Gateway)
			}
		}
		if r := f.Spec.Router; r != nil && r.Node == st.Name {
			writeOutside(&b, f.Spec)
		}
		fmt.Fprintf(&b, "bothnia apply %s --node %s >/run/apply.log 2>&1 || { cat /run/apply.log; exit 1; }\n", SpecFile, st.Name)
		// The node's servers, as their systemd units run them.
		for _, sv := range st.Services {
			ns := NSPrefix + sv.Namespace
			switch sv.Kind {
			case "dhcp":
				fmt.Fprintf(&b, "setsid ip netns exec %s bothnia dhcp --spec %s --site %s --address %s --iface %s >/run/%s.log 2>&1 < /dev/null &\n",
					ns, SpecFile, sv.Site, sv.Addr, sv.Iface, sv.Name())
			case "dns":
				fmt.Fprintf(&b, "setsid ip netns exec %s bothnia dns --spec %s --listen %s:53 >/run/%s.log 2>&1 < /dev/null &\n",
					ns, SpecFile, sv.Addr, sv.Name())
			}
		}
		if _, err := g.Sh(ctx, b.String()); err != nil {
			return err
		}
		return f.leases(ctx, st, g, dhcpVMs)
	})
}

// writeOutside puts the world behind the router's node: the node routes
// to it by default, and it holds every endpoint on its loopback.
func writeOutside(b *strings.Builder, s *spec.Spec) {
	up, out := netip.MustParsePrefix(UpstreamIP), netip.MustParsePrefix(OutsideIP)
	fmt.Fprintf(b, "ip netns add %s\nip -n %s link set lo up\n", OutsideNS, OutsideNS)
	fmt.Fprintf(b, "ip link add up0 type veth peer name ext0 netns %s\n", OutsideNS)
	fmt.Fprintf(b, "ip addr add %s dev up0\nip link set up0 up\n", up)
	fmt.Fprintf(b, "ip -n %s addr add %s dev ext0\nip -n %s link set ext0 up\n", OutsideNS, out, OutsideNS)
	fmt.Fprintf(b, "ip route add default via %s dev up0\n", out.Addr())
	fmt.Fprintf(b, "ip -n %s route add %s via %s dev ext0\n", OutsideNS, s.Router.External.CIDR, up.Addr())
	for _, ep := range lab.Endpoints(s) {
		fmt.Fprintf(b, "ip -n %s addr add %s/32 dev lo\n", OutsideNS, ep.Addr)
	}
}

// leases runs udhcpc once in each of the node's DHCP VMs, as the lab
// does, with the lab's script: the lease is kept in /run/lease-<vm>, the
// resolver in /etc/netns/vm-<vm>/resolv.conf.
func (f *Fabric) leases(ctx context.Context, st *node.State, g *guest.Guest, dhcpVMs map[string]bool) error {
	var b strings.Builder
	b.WriteString("set -e\n")
	n := 0
	for _, p := range st.Plan.Ports {
		if !dhcpVMs[p.VM] {
			continue
		}
		n++
		ns := VMNS(p.VM)
		fmt.Fprintf(&b, "( LEASE_FILE=/run/lease-%s RESOLV_CONF=/etc/netns/%s/resolv.conf ip netns exec %s udhcpc -i eth0 -f -q -n -t 10 -T 1 "+
			"-s /host/udhcpc.script -O mtu -O staticroutes -O search -O domain >/run/udhcpc-%s.log 2>&1 || { echo %s: no lease; cat /run/udhcpc-%s.log; exit 1; } ) &\n",
			p.VM, ns, ns, p.VM, p.VM, p.VM)
	}
	if n == 0 {
		return nil
	}
	b.WriteString("fail=0\nfor j in $(jobs -p); do wait $j || fail=1; done\nexit $fail\n")
	_, err := g.Sh(ctx, b.String())
	return err
}

// Lease is what a VM's DHCP client recorded (key=value lines).
func (f *Fabric) Lease(ctx context.Context, vm string) (map[string]string, error) {
	out, err := f.VMGuest(vm).Sh(ctx, "cat /run/lease-"+vm)
	if err != nil {
		return nil, err
	}
	kv := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			kv[k] = v
		}
	}
	return kv, nil
}

// Check runs check's probes (check.Expect, sampled unless full) from the
// VMs in their guests, with check's responders in every VM and in the
// outside, and returns the results.
func (f *Fabric) Check(ctx context.Context, full bool) ([]check.Result, error) {
	s := f.Spec
	fw := f.Desired.Nodes[0].Firewall
	eps := lab.Endpoints(s)
	stop, err := f.listen(ctx, "check")
	if err != nil {
		return nil, err
	}
	defer stop()
	probes := check.Expect(s, fw, eps)
	if !full {
		probes = check.Sample(s, fw, probes)
	}
	return check.Run(ctx, probes, &prober{f}, 8), nil
}

// listen starts check's responders, on the spec's ports, in every VM and
// in the outside, kept under key; stop ends them.
func (f *Fabric) listen(ctx context.Context, key string) (stop func(), err error) {
	s := f.Spec
	listen := map[string][]string{}
	for _, vm := range check.VMs(s) {
		listen[f.NodeOf[vm.Name]] = append(listen[f.NodeOf[vm.Name]], VMNS(vm.Name))
	}
	if s.Router != nil {
		listen[s.Router.Node] = append(listen[s.Router.Node], OutsideNS)
	}
	nodes := make([]string, 0, len(listen))
	for n := range listen {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	stop = func() {
		for _, n := range nodes {
			_, _ = f.Guest(n).Do(context.Background(), wire.Request{Op: wire.OpUnlisten, Key: key})
		}
	}
	for _, n := range nodes {
		r, err := f.Guest(n).Do(ctx, wire.Request{Op: wire.OpListen, Key: key, Namespaces: listen[n], Ports: s.Lab.Ports})
		if err == nil && r.RC != 0 {
			err = errors.New(r.Err)
		}
		if err != nil {
			stop()
			return nil, fmt.Errorf("responders on %s: %w", n, err)
		}
	}
	return stop, nil
}

// prober sends check's probes from a VM's namespace in its guest.
type prober struct{ f *Fabric }

func (p *prober) do(ctx context.Context, vm string, req wire.Request) (wire.Response, error) {
	r, err := p.f.VMGuest(vm).Do(ctx, req)
	if err != nil {
		return r, err
	}
	if r.RC != 0 {
		return r, errors.New(r.Err)
	}
	return r, nil
}

func (p *prober) TCP(ctx context.Context, vm string, addr netip.Addr, port int) (string, error) {
	r, err := p.do(ctx, vm, wire.Request{Op: wire.OpTCP, Namespace: VMNS(vm), Addr: addr.String(), Port: port, TimeoutMS: 1500})
	return strings.TrimSpace(r.Out), err
}

func (p *prober) ICMP(ctx context.Context, vm string, addr netip.Addr) error {
	_, err := p.do(ctx, vm, wire.Request{Op: wire.OpICMP, Namespace: VMNS(vm), Addr: addr.String(), TimeoutMS: 1500})
	return err
}
