package lab

import (
	"fmt"
	"net"
	"sort"
	"strings"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/bothnia/bothnia/check"
	"github.com/bothnia/bothnia/namespace"
	"github.com/bothnia/bothnia/plan"
	"github.com/bothnia/bothnia/spec"
)

// CheckServices verifies what every DHCP VM got from its site's server and
// what the fabric's DNS answers it: names of both sites, reverse, and an
// outside name through the forwarder (answered by a resolver check starts
// in the outside namespace).
func (l *Lab) CheckServices(s *spec.Spec) ([]check.Service, error) {
	ls, err := LabSpec(s)
	if err != nil {
		return nil, err
	}
	if s.DNS != nil && len(s.DNS.Forwarders) > 0 && s.Router != nil {
		stop, err := outsideResolver(l.OutsideNS(), s.DNS.Forwarders)
		if err != nil {
			return nil, err
		}
		defer stop()
	}
	n := plan.InfraNetwork(ls)
	dhcpVMs := DHCPVMs(ls)
	var out []check.Service
	for _, vm := range n.VMs {
		if !dhcpVMs[vm.Name] {
			continue
		}
		out = append(out, l.checkLease(ls, vm)...)
		if ls.DNS != nil {
			// Every resolver the VMs are given must answer alike.
			for i, server := range ls.DNS.Addresses() {
				for _, q := range check.DNSWant(ls, n, vm) {
					what := q[0]
					if i > 0 {
						what += " @" + server
					}
					got := l.resolve(vm.Name, server, q[0])
					out = append(out, check.Service{Kind: "dns", VM: vm.Name, What: what, Want: q[1], Got: got})
				}
			}
		}
	}
	return out, nil
}

func (l *Lab) checkLease(s *spec.Spec, vm *spec.VM) []check.Service {
	got, _ := readLease(l.LeaseFile(vm.Name))
	var out []check.Service
	want := check.LeaseWant(s, vm)
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out = append(out, check.Service{Kind: "dhcp", VM: vm.Name, What: "lease " + k, Want: want[k], Got: got[k]})
	}
	// And the kernel holds what the lease said.
	mtu, addrs := "", ""
	if h, nsh, err := namespace.Netlink(l.VMNS(vm.Name)); err == nil {
		if link, err := h.LinkByName(VMDev); err == nil {
			mtu = fmt.Sprint(link.Attrs().MTU)
			as, _ := h.AddrList(link, 2)
			var ss []string
			for _, a := range as {
				ss = append(ss, a.IPNet.String())
			}
			addrs = strings.Join(ss, ",")
		}
		h.Close()
		nsh.Close()
	}
	out = append(out,
		check.Service{Kind: "dhcp", VM: vm.Name, What: "eth0 mtu", Want: want["mtu"], Got: mtu},
		check.Service{Kind: "dhcp", VM: vm.Name, What: "eth0 address", Want: vm.IP + "/" + want["mask"], Got: addrs})
	return out
}

// resolve asks the fabric's DNS from inside the VM: "A name" or "PTR ip".
func (l *Lab) resolve(vm, server, q string) string {
	kind, name, _ := strings.Cut(q, " ")
	m := new(mdns.Msg)
	if kind == "PTR" {
		rev, _ := mdns.ReverseAddr(name)
		m.SetQuestion(rev, mdns.TypePTR)
	} else {
		m.SetQuestion(name, mdns.TypeA)
	}
	var resp *mdns.Msg
	err := namespace.Do(l.VMNS(vm), func() error {
		// The exchange, socket and all, runs on this thread, in the VM.
		c := &mdns.Client{Net: "udp", Timeout: 3 * time.Second}
		var err error
		resp, _, err = c.Exchange(m, net.JoinHostPort(server, "53"))
		return err
	})
	if err != nil {
		return "error: " + err.Error()
	}
	if resp.Rcode != mdns.RcodeSuccess {
		return mdns.RcodeToString[resp.Rcode]
	}
	var got []string
	for _, rr := range resp.Answer {
		switch v := rr.(type) {
		case *mdns.A:
			got = append(got, v.A.String())
		case *mdns.PTR:
			got = append(got, v.Ptr)
		}
	}
	return strings.Join(got, ",")
}

// outsideResolver answers check.ExternalName on port 53 of the forwarders'
// addresses in the outside namespace, for as long as the check runs.
func outsideResolver(ns string, addrs []string) (func(), error) {
	h := mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		m := new(mdns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		if len(r.Question) == 1 && mdns.CanonicalName(r.Question[0].Name) == check.ExternalName && r.Question[0].Qtype == mdns.TypeA {
			m.Answer = append(m.Answer, &mdns.A{Hdr: mdns.RR_Header{Name: r.Question[0].Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 30},
				A: check.ExternalAddr.AsSlice()})
		} else {
			m.Rcode = mdns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})
	var servers []*mdns.Server
	stop := func() {
		for _, s := range servers {
			_ = s.Shutdown()
		}
	}
	for _, a := range addrs {
		var pc net.PacketConn
		err := namespace.Do(ns, func() error {
			var err error
			pc, err = net.ListenPacket("udp4", net.JoinHostPort(a, "53"))
			return err
		})
		if err != nil {
			stop()
			return nil, fmt.Errorf("lab: outside resolver on %s: %w", a, err)
		}
		started := make(chan struct{})
		srv := &mdns.Server{PacketConn: pc, Handler: h, NotifyStartedFunc: func() { close(started) }}
		servers = append(servers, srv)
		go func() { _ = srv.ActivateAndServe() }()
		<-started
	}
	return stop, nil
}
