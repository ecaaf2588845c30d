package firewall_test

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/bothnia/bothnia/namespace"
	"github.com/bothnia/bothnia/plan"
)

// Helpers for the rows about the node itself and about taps the firewall
// does not know: net1's bridge on knox-c1, an address on it, and a stray
// tap plugged into it.

func (fx *fixture) bridge() (name, mac string) {
	n := fx.s.Network("net1")
	id := plan.NetworkID(fx.s, n)
	return plan.BridgeName(id), plan.BridgeMAC(id, "knox-c1")
}

func (fx *fixture) bridgeMAC() string { _, mac := fx.bridge(); return mac }

// bridgeLL is the bridge's own IPv6 link-local address, as the kernel
// gave it.
func (fx *fixture) bridgeLL() netip.Addr {
	br, _ := fx.bridge()
	var ll netip.Addr
	fx.nodeLink(br, func(h *netlink.Handle, l netlink.Link) error {
		addrs, err := h.AddrList(l, netlink.FAMILY_V6)
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.IsLinkLocalUnicast() {
				ll = ip
			}
		}
		return err
	})
	if !ll.IsValid() {
		fx.t.Fatalf("bridge %s has no link-local address", br)
	}
	return ll
}

func (fx *fixture) nodeLink(name string, fn func(h *netlink.Handle, l netlink.Link) error) {
	h, nsh, err := namespace.Netlink(fx.l.NodeNS("knox-c1"))
	if err != nil {
		fx.t.Fatal(err)
	}
	defer nsh.Close()
	defer h.Close()
	l, err := h.LinkByName(name)
	if err == nil {
		err = fn(h, l)
	}
	if err != nil {
		fx.t.Fatal(err)
	}
}

// nodeSink listens on knox-c1 (IPv4, with nodeAddr on net1's bridge).
func (fx *fixture) nodeSink(port int) *udpSink {
	br, _ := fx.bridge()
	fx.nodeLink(br, func(h *netlink.Handle, l netlink.Link) error {
		a, _ := netlink.ParseAddr(nodeAddr + "/16")
		if err := h.AddrAdd(l, a); err != nil && err != syscall.EEXIST {
			return err
		}
		return nil
	})
	return fx.sinkIn(fx.l.NodeNS("knox-c1"), "udp4", port)
}

// nodeSink6 listens on knox-c1's IPv6 addresses.
func (fx *fixture) nodeSink6(port int) *udpSink {
	return fx.sinkIn(fx.l.NodeNS("knox-c1"), "udp6", port)
}

// forwarding turns IPv4 forwarding on knox-c1 on or off, as a real
// host (a network node, Neutron's own) may have it.
func (fx *fixture) forwarding(on bool) {
	v := "0"
	if on {
		v = "1"
	}
	if err := namespace.SetSysctl(fx.l.NodeNS("knox-c1"), "net.ipv4.ip_forward", v); err != nil {
		fx.t.Fatal(err)
	}
}

// strayTap plugs a tap the fabric does not name into net1's bridge on
// knox-c1, with a namespace behind it, as a host does before its
// firewall knows the port; it returns that namespace.
func (fx *fixture) strayTap() string {
	ns := fx.l.VMNS("stray")
	if namespace.Exists(ns) {
		return ns
	}
	br, _ := fx.bridge()
	node := fx.l.NodeNS("knox-c1")
	if _, err := namespace.Create(ns); err != nil {
		fx.t.Fatal(err)
	}
	for _, args := range [][]string{
		{"-n", node, "link", "add", "tap0123456789a", "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"-n", node, "link", "set", "tap0123456789a", "master", br, "up"},
		{"-n", ns, "link", "set", "eth0", "address", macX, "up"},
		{"-n", ns, "addr", "add", "10.101.128.77/16", "dev", "eth0"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			fx.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return ns
}

// foreignTaps plugs two taps into a bridge bothnia does not own on
// knox-c1 (as Neutron's linuxbridge agent wires its own networks on a
// host it shares with bothnia), each with a namespace behind it; it
// returns the two namespaces.
func (fx *fixture) foreignTaps() (string, string) {
	node := fx.l.NodeNS("knox-c1")
	a, b := fx.l.VMNS("neutron-a"), fx.l.VMNS("neutron-b")
	if namespace.Exists(a) {
		return a, b
	}
	cmds := [][]string{{"-n", node, "link", "add", "brqforeign", "type", "bridge"}, {"-n", node, "link", "set", "brqforeign", "up"}}
	for i, ns := range []string{a, b} {
		if _, err := namespace.Create(ns); err != nil {
			fx.t.Fatal(err)
		}
		tap := fmt.Sprintf("tapforeign%d", i)
		cmds = append(cmds,
			[]string{"-n", node, "link", "add", tap, "type", "veth", "peer", "name", "eth0", "netns", ns},
			[]string{"-n", node, "link", "set", tap, "master", "brqforeign", "up"},
			[]string{"-n", ns, "link", "set", "eth0", "address", fmt.Sprintf("fa:16:3e:00:01:0%d", i), "up"},
			[]string{"-n", ns, "addr", "add", fmt.Sprintf("10.202.0.%d/24", 10+i), "dev", "eth0"})
	}
	for _, args := range cmds {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			fx.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return a, b
}

// arrivesFromNS sends a frame from a namespace's eth0 and reports whether
// it reaches a VM.
func (fx *fixture) arrivesFromNS(ns, to string, w *wireFrame) bool {
	c := newCapture(fx.t, fx.vm, []string{to}, findMarkers)
	bs, err := w.bytes()
	if err != nil {
		fx.t.Fatal(err)
	}
	sendFrames(fx.t, ns, bs)
	return eventually(func() bool { return c.saw(to, w.key()) })
}

// eventually polls for a short while.
func eventually(ok func() bool) bool {
	for i := 0; i < 6; i++ {
		time.Sleep(50 * time.Millisecond)
		if ok() {
			return true
		}
	}
	return false
}

// sinkIn listens for UDP in any namespace.
func (fx *fixture) sinkIn(ns, network string, port int) *udpSink {
	s := &udpSink{got: map[string]bool{}}
	err := namespace.Do(ns, func() error {
		var err error
		s.conn, err = net.ListenPacket(network, (&net.UDPAddr{Port: port}).String())
		return err
	})
	if err != nil {
		fx.t.Fatal(err)
	}
	fx.t.Cleanup(func() { s.conn.Close() })
	go s.read()
	return s
}
