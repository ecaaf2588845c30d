package lab

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/bothnia/bothnia/namespace"
)

// ensurer makes the lab's own cabling exist, recording each change so a
// second `lab up` can show it changed nothing. The handles it opens are
// cached per namespace and closed by close.
type ensurer struct {
	changes []string
	handles map[string]*netlink.Handle
	nss     map[string]netns.NsHandle
}

func newEnsurer() *ensurer {
	return &ensurer{handles: map[string]*netlink.Handle{}, nss: map[string]netns.NsHandle{}}
}

func (e *ensurer) changef(ns, format string, args ...any) {
	e.changes = append(e.changes, ns+": "+fmt.Sprintf(format, args...))
}

func (e *ensurer) close() {
	for _, h := range e.handles {
		h.Close()
	}
	for _, n := range e.nss {
		n.Close()
	}
}

// netns makes the namespace exist with its loopback up.
func (e *ensurer) netns(name string) error {
	made, err := namespace.Create(name)
	if err != nil {
		return err
	}
	if made {
		e.changef(name, "netns add")
	}
	return e.up(name, "lo")
}

func (e *ensurer) handle(ns string) (*netlink.Handle, error) {
	if h, ok := e.handles[ns]; ok {
		return h, nil
	}
	h, nsh, err := namespace.Netlink(ns)
	if err != nil {
		return nil, err
	}
	e.handles[ns], e.nss[ns] = h, nsh
	return h, nil
}

func (e *ensurer) link(ns, name string) (*netlink.Handle, netlink.Link, error) {
	h, err := e.handle(ns)
	if err != nil {
		return nil, nil, err
	}
	l, err := h.LinkByName(name)
	if err != nil {
		return h, nil, fmt.Errorf("%s: %s: %w", ns, name, err)
	}
	return h, l, nil
}

// veth makes a pair a (in nsA) <-> b (in nsB) if a does not exist.
func (e *ensurer) veth(nsA, a, nsB, b string, mtu int, macA string) error {
	h, err := e.handle(nsA)
	if err != nil {
		return err
	}
	if _, err := e.handle(nsB); err != nil {
		return err
	}
	if _, err := h.LinkByName(a); err == nil {
		return nil
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = a
	if mtu != 0 {
		attrs.MTU = mtu
	}
	if macA != "" {
		mac, err := net.ParseMAC(macA)
		if err != nil {
			return err
		}
		attrs.HardwareAddr = mac
	}
	v := &netlink.Veth{LinkAttrs: attrs, PeerName: b, PeerNamespace: netlink.NsFd(int(e.nss[nsB]))}
	if err := h.LinkAdd(v); err != nil {
		return fmt.Errorf("%s: veth %s <-> %s/%s: %w", nsA, a, nsB, b, err)
	}
	e.changef(nsA, "link add %s type veth peer %s netns %s", a, b, nsB)
	return nil
}

func (e *ensurer) bridge(ns, name string) error {
	h, err := e.handle(ns)
	if err != nil {
		return err
	}
	if _, err := h.LinkByName(name); err == nil {
		return nil
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
		return fmt.Errorf("%s: bridge %s: %w", ns, name, err)
	}
	e.changef(ns, "link add %s type bridge", name)
	return nil
}

func (e *ensurer) master(ns, dev, br string) error {
	h, l, err := e.link(ns, dev)
	if err != nil {
		return err
	}
	_, b, err := e.link(ns, br)
	if err != nil {
		return err
	}
	if l.Attrs().MasterIndex == b.Attrs().Index {
		return nil
	}
	if err := h.LinkSetMasterByIndex(l, b.Attrs().Index); err != nil {
		return fmt.Errorf("%s: %s master %s: %w", ns, dev, br, err)
	}
	e.changef(ns, "link set %s master %s", dev, br)
	return nil
}

func (e *ensurer) up(ns, dev string) error {
	h, l, err := e.link(ns, dev)
	if err != nil {
		return err
	}
	if l.Attrs().Flags&net.FlagUp != 0 {
		return nil
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("%s: %s up: %w", ns, dev, err)
	}
	e.changef(ns, "link set %s up", dev)
	return nil
}

func (e *ensurer) addr(ns, dev, cidr string) error {
	h, l, err := e.link(ns, dev)
	if err != nil {
		return err
	}
	have, err := h.AddrList(l, netlink.FAMILY_V4)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return err
	}
	for _, a := range have {
		if a.IPNet.String() == cidr {
			return nil
		}
	}
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		return err
	}
	if err := h.AddrAdd(l, a); err != nil {
		return fmt.Errorf("%s: addr %s dev %s: %w", ns, cidr, dev, err)
	}
	e.changef(ns, "addr add %s dev %s", cidr, dev)
	return nil
}

// route adds dst via gw dev (dst "0.0.0.0/0" for default) unless present.
func (e *ensurer) route(ns, dst, via, dev string) error {
	h, l, err := e.link(ns, dev)
	if err != nil {
		return err
	}
	_, d, err := net.ParseCIDR(dst)
	if err != nil {
		return err
	}
	r := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: d, Gw: net.ParseIP(via)}
	have, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: d}, netlink.RT_FILTER_DST)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return err
	}
	for _, x := range have {
		if x.Gw.Equal(r.Gw) && x.LinkIndex == r.LinkIndex {
			return nil
		}
	}
	if err := h.RouteReplace(r); err != nil {
		return fmt.Errorf("%s: route %s via %s: %w", ns, dst, via, err)
	}
	e.changef(ns, "route add %s via %s dev %s", dst, via, dev)
	return nil
}

// tbf shapes dev's egress to rateMbit, as the seed's 1 Gbit/s fibre.
func (e *ensurer) tbf(ns, dev string, rateMbit int) error {
	h, l, err := e.link(ns, dev)
	if err != nil {
		return err
	}
	rate := uint64(rateMbit) * 1000 * 1000 / 8 // bytes per second
	qs, err := h.QdiscList(l)
	if err != nil {
		return err
	}
	for _, q := range qs {
		if t, ok := q.(*netlink.Tbf); ok && t.Parent == netlink.HANDLE_ROOT && t.Rate == rate {
			return nil
		}
	}
	// The bucket must hold at least one timer tick of traffic (rate/HZ,
	// 500 kB at 1 Gbit/s and HZ=250); 1 MB leaves room. Latency 50 ms.
	burst := uint32(1 << 20)
	if b := rate / 100; b > uint64(burst) {
		burst = uint32(b)
	}
	q := &netlink.Tbf{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: l.Attrs().Index, Handle: netlink.MakeHandle(1, 0), Parent: netlink.HANDLE_ROOT},
		Rate:       rate,
		Limit:      uint32(rate/20) + burst,
		Buffer:     netlink.Xmittime(rate, burst),
	}
	if err := h.QdiscReplace(q); err != nil {
		return fmt.Errorf("%s: tbf on %s: %w", ns, dev, err)
	}
	e.changef(ns, "qdisc replace dev %s root tbf rate %dmbit", dev, rateMbit)
	return nil
}

func (e *ensurer) sysctl(ns, key, value string) error {
	have, err := namespace.Sysctl(ns, key)
	if err != nil {
		return err
	}
	if have == value {
		return nil
	}
	if err := namespace.SetSysctl(ns, key, value); err != nil {
		return err
	}
	e.changef(ns, "sysctl %s=%s", key, value)
	return nil
}
