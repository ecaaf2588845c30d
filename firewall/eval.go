package firewall

import "net/netip"

// Packet is a new connection's first packet, as the reference evaluator
// sees it.
type Packet struct {
	Src, Dst netip.Addr
	Proto    int // 1 icmp, 6 tcp, 17 udp, 58 icmpv6
	Port     int // destination port, or ICMP type
	Code     int // ICMP code
}

// Egress reports whether the port's groups let it open the connection.
func (f *Fabric) Egress(p *Port, pkt Packet) bool { return f.allows(p, pkt, false, pkt.Dst) }

// Ingress reports whether the port's groups let the connection in.
func (f *Fabric) Ingress(p *Port, pkt Packet) bool { return f.allows(p, pkt, true, pkt.Src) }

// Allows reports whether a new connection from one VM's port to another's
// (either may be nil: an unsecured port or an address outside the fabric)
// passes both firewalls.
func (f *Fabric) Allows(from, to *Port, pkt Packet) bool {
	if from != nil && !f.Egress(from, pkt) {
		return false
	}
	return to == nil || f.Ingress(to, pkt)
}

func (f *Fabric) allows(p *Port, pkt Packet, ingress bool, remote netip.Addr) bool {
	for _, g := range p.Groups {
		grp := f.Groups[g]
		if grp == nil {
			continue
		}
		for _, r := range grp.Rules {
			if r.Ingress == ingress && f.matches(r, pkt, remote) {
				return true
			}
		}
	}
	return false
}

func (f *Fabric) matches(r Rule, pkt Packet, remote netip.Addr) bool {
	if r.V6 != pkt.Src.Is6() {
		return false
	}
	if r.Proto >= 0 && r.Proto != pkt.Proto {
		return false
	}
	if r.PortMin > 0 && (pkt.Port < r.PortMin || pkt.Port > r.PortMax) {
		return false
	}
	if (r.Proto == 1 || r.Proto == 58) && r.ICMPType >= 0 {
		if pkt.Port != r.ICMPType || (r.ICMPCode >= 0 && pkt.Code != r.ICMPCode) {
			return false
		}
	}
	if r.RemotePrefix.IsValid() && !r.RemotePrefix.Contains(remote) {
		return false
	}
	if r.RemoteGroup != "" {
		in := false
		for _, m := range f.Sets[r.RemoteGroup] {
			if m.Contains(remote) {
				in = true
				break
			}
		}
		if !in {
			return false
		}
	}
	return true
}
