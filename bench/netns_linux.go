package bench

import (
	"fmt"

	"github.com/vishvananda/netlink"

	"github.com/bothnia/bothnia/namespace"
)

// pair makes two namespaces joined by a veth, srv/ds0 and cli/dc0, with
// the given addresses, and returns a function that removes both.
func pair(prefix, srvCIDR, cliCIDR string) (srv, cli string, cleanup func(), err error) {
	srv, cli = prefix+"-srv", prefix+"-cli"
	cleanup = func() { _ = namespace.Delete(srv); _ = namespace.Delete(cli) }
	cleanup() // what a killed run left
	for _, ns := range []string{srv, cli} {
		if _, err := namespace.Create(ns); err != nil {
			cleanup()
			return "", "", nil, err
		}
	}
	hs, nss, err := namespace.Netlink(srv)
	if err != nil {
		cleanup()
		return "", "", nil, err
	}
	defer nss.Close()
	defer hs.Close()
	hc, nsc, err := namespace.Netlink(cli)
	if err != nil {
		cleanup()
		return "", "", nil, err
	}
	defer nsc.Close()
	defer hc.Close()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "ds0"
	if err := hs.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "dc0", PeerNamespace: netlink.NsFd(int(nsc))}); err != nil {
		cleanup()
		return "", "", nil, err
	}
	for _, x := range []struct {
		h         *netlink.Handle
		dev, cidr string
	}{{hs, "ds0", srvCIDR}, {hc, "dc0", cliCIDR}} {
		l, err := x.h.LinkByName(x.dev)
		if err == nil {
			var a *netlink.Addr
			if a, err = netlink.ParseAddr(x.cidr); err == nil {
				err = x.h.AddrAdd(l, a)
			}
		}
		if err == nil {
			err = x.h.LinkSetUp(l)
		}
		if lo, lerr := x.h.LinkByName("lo"); lerr == nil {
			_ = x.h.LinkSetUp(lo)
		}
		if err != nil {
			cleanup()
			return "", "", nil, fmt.Errorf("bench: %s: %w", x.dev, err)
		}
	}
	return srv, cli, cleanup, nil
}
