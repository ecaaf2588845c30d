package dataplane

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/bothnia/bothnia/plan"
)

func routeKey(dst, via, dev string) string { return dst + " via " + via + " dev " + dev }

// routes makes the namespace's static routes in the main table exactly
// the plan's. In the host namespace only bothnia's (protocol RouteProto)
// are compared, since the host's own routes belong to someone else. A
// router or DHCP namespace is bothnia's whole: there any route but the
// kernel's connected ones is compared, so a default route someone adds to
// the router (opening it to the world) is removed on the next apply.
func (a *applier) routes(ns *plan.Namespace) error {
	h := a.handles[ns.Name]
	filter, mask := &netlink.Route{Protocol: RouteProto}, uint64(netlink.RT_FILTER_PROTOCOL)
	if ns.Name != plan.HostNS {
		filter, mask = &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE
	}
	all, err := retry(func() ([]netlink.Route, error) { return h.RouteListFiltered(netlink.FAMILY_V4, filter, mask) })
	var have []netlink.Route
	for _, r := range all {
		if r.Protocol != unix.RTPROT_KERNEL {
			have = append(have, r)
		}
	}
	if err != nil {
		return fmt.Errorf("list: %w", err)
	}
	want := map[string]plan.Route{}
	for _, r := range ns.Routes {
		want[routeKey(r.Dst, r.Via, r.Dev)] = r
	}
	names := map[int]string{}
	haveSet := map[string]bool{}
	var errs []error
	for _, r := range have {
		dev, ok := names[r.LinkIndex]
		if !ok {
			if l, err := h.LinkByIndex(r.LinkIndex); err == nil {
				dev = l.Attrs().Name
				names[r.LinkIndex] = dev
			}
		}
		dst := "0.0.0.0/0"
		if r.Dst != nil {
			dst = r.Dst.String()
		}
		via := ""
		if r.Gw != nil {
			via = r.Gw.String()
		}
		k := routeKey(dst, via, dev)
		if _, ok := want[k]; ok {
			haveSet[k] = true
			continue
		}
		r := r
		if err := h.RouteDel(&r); err != nil {
			errs = append(errs, fmt.Errorf("del %s: %w", k, err))
			continue
		}
		a.changef(ns.Name, "route del %s", k)
	}
	for _, r := range ns.Routes {
		k := routeKey(r.Dst, r.Via, r.Dev)
		if haveSet[k] {
			continue
		}
		l, err := h.LinkByName(r.Dev)
		if err != nil {
			errs = append(errs, fmt.Errorf("route %s: device %s: %w", r.Dst, r.Dev, err))
			continue
		}
		_, dst, err := net.ParseCIDR(r.Dst)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		nr := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: dst, Protocol: RouteProto}
		if r.Via != "" {
			nr.Gw = net.ParseIP(r.Via)
		}
		if err := h.RouteReplace(nr); err != nil {
			errs = append(errs, fmt.Errorf("add %s: %w", k, err))
			continue
		}
		a.changef(ns.Name, "route add %s", r.String())
	}
	return errors.Join(errs...)
}
