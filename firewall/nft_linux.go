package firewall

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netns"

	"github.com/bothnia/bothnia/namespace"
	"github.com/bothnia/bothnia/nft"
)

// NFT programs one node's firewall through nftables. It keeps the desired
// ruleset and what it believes the kernel holds, so single changes (a
// port, a member) cost the same at ten ports as at ten thousand.
type NFT struct {
	ns      string
	handle  netns.NsHandle
	a       *nft.Applier
	top     neutronTopper     // a host shared with Neutron's linuxbridge agent
	bridges []string          // of the last Program
	zones   map[string]uint16 // bridge -> conntrack zone last programmed; nil: read the kernel
	ids     map[string]uint16 // tap -> dispatch ID last programmed
	ports   portCache         // each port's elements, as last rendered
}

// NewNFT returns a programmer for the named namespace ("" is the process's
// own, a real host's root).
func NewNFT(ns string) (*NFT, error) {
	h, err := namespace.Open(ns)
	if err != nil {
		return nil, err
	}
	fd := int(h)
	if ns == "" {
		fd = 0
	}
	return &NFT{ns: ns, handle: h, a: nft.NewApplier(fd), top: neutronTopper{ns: ns, run: ExecIn}}, nil
}

// Close releases the namespace handle.
func (x *NFT) Close() { x.handle.Close() }

// bridgeHooks makes bridged IPv4/IPv6 traverse the inet hooks, where
// conntrack and the security groups are. The setting is per namespace.
func (x *NFT) bridgeHooks() error {
	// filter-vlan-tagged: a priority-tagged (VID 0) frame, which the
	// anti-spoofing rules let through, must meet conntrack and the groups
	// too, not skip the inet hooks.
	for _, k := range []string{"net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables", "net.bridge.bridge-nf-filter-vlan-tagged"} {
		v, err := namespace.Sysctl(x.ns, k)
		if err != nil {
			return fmt.Errorf("firewall: %s needs br_netfilter: %w", k, err)
		}
		if v != "1" {
			if err := namespace.SetSysctl(x.ns, k, "1"); err != nil {
				return err
			}
		}
	}
	return nil
}

// Program makes the node's whole firewall match the fabric: the first
// call reads the kernel back; later calls write only what changed.
func (x *NFT) Program(f *Fabric, node string) ([]string, error) {
	if err := x.bridgeHooks(); err != nil {
		return nil, err
	}
	if x.zones == nil {
		rules, err := x.a.ReadChain(nftables.TableFamilyINet, FWTable, "prerouting")
		if err != nil {
			return nil, fmt.Errorf("firewall: read conntrack zones: %w", err)
		}
		x.zones = ParseZones(rules)
		marks, err := x.a.ReadElems(nftables.TableFamilyBridge, L2Table, mapInMarks)
		if err != nil {
			return nil, fmt.Errorf("firewall: read port IDs: %w", err)
		}
		x.ids = parseIDs(marks)
	}
	x.zones = f.Zones(node, x.zones)
	x.ids = f.PortIDs(node, x.ids)
	x.a.Replace(renderNFTNode(f, node, x.zones, x.ids, &x.ports))
	changes, err := x.a.Apply()
	if err != nil {
		return changes, err
	}
	x.bridges = f.Bridges()
	top, err := x.top.sync(x.bridges, false)
	return append(changes, top...), err
}

// AddPort adds one port: set elements only (its spoofing pairs, its marks,
// its groups' port sets, its addresses in its groups' member sets), in one
// transaction. The port's groups must already be in use on the node.
func (x *NFT) AddPort(f *Fabric, p *Port) ([]string, error) {
	q := *p
	q.ID = x.allocID(p)
	p = &q
	x.setPort(portElems(f, p), true)
	for _, g := range p.Groups {
		for _, pr := range p.Pairs {
			x.member(g, pr.Prefix, true)
		}
	}
	return x.a.Apply()
}

// RemovePort removes one port's elements.
func (x *NFT) RemovePort(f *Fabric, p *Port) ([]string, error) {
	q := *p
	if id, ok := x.ids[p.Name]; ok {
		q.ID = id
		delete(x.ids, p.Name)
	}
	p = &q
	x.setPort(portElems(f, p), false)
	for _, g := range p.Groups {
		for _, pr := range p.Pairs {
			x.member(g, pr.Prefix, false)
		}
	}
	return x.a.Apply()
}

// allocID returns the port's ID on this node: the one it has, or its
// fabric-wide number if no other port here uses it, else the next free.
func (x *NFT) allocID(p *Port) uint16 {
	if x.ids == nil {
		x.ids = map[string]uint16{}
	}
	if id, ok := x.ids[p.Name]; ok {
		return id
	}
	used := map[uint16]bool{0: true}
	for _, id := range x.ids {
		used[id] = true
	}
	id := freeID(p.ID, used)
	x.ids[p.Name] = id
	return id
}

func (x *NFT) setPort(pe PortElems, add bool) {
	fams := map[string]nftables.TableFamily{L2Table: nftables.TableFamilyBridge, FWTable: nftables.TableFamilyINet}
	for table, sets := range pe {
		for set, es := range sets {
			for _, e := range es {
				if add {
					_ = x.a.SetElem(fams[table], table, set, e)
				} else {
					x.a.DeleteElem(fams[table], table, set, e)
				}
			}
		}
	}
}

// member adds or removes one address of a group's member set, if the node
// uses that set. Members live on both sites; a store feeds them here.
func (x *NFT) member(group string, p netip.Prefix, add bool) {
	set := setName(group, p.Addr().Is6())
	e := nft.PrefixElem(p)
	if add {
		_ = x.a.SetElem(nftables.TableFamilyINet, FWTable, set, e) // no such set: no rule uses it here
	} else {
		x.a.DeleteElem(nftables.TableFamilyINet, FWTable, set, e)
	}
}

// AddMember puts one address into a group's member set and applies it.
func (x *NFT) AddMember(group string, p netip.Prefix) ([]string, error) {
	x.member(group, p, true)
	return x.a.Apply()
}

// RemoveMember takes one address out of a group's member set.
func (x *NFT) RemoveMember(group string, p netip.Prefix) ([]string, error) {
	x.member(group, p, false)
	return x.a.Apply()
}

// Resync reads the kernel back and repairs any drift on the next Apply;
// it returns what differed.
func (x *NFT) Resync() ([]string, error) {
	if x.zones == nil {
		return nil, nil // nothing programmed yet
	}
	// Bridged traffic that skips the inet hooks skips the groups: a
	// sysctl turned off by hand would open every port.
	if err := x.bridgeHooks(); err != nil {
		return nil, err
	}
	drift, err := x.a.Resync()
	if err != nil {
		return nil, err
	}
	if _, err := x.a.Apply(); err != nil {
		return drift, err
	}
	top, err := x.top.sync(x.bridges, true)
	return append(drift, top...), err
}

// Remove deletes bothnia's firewall tables from the namespace, whatever
// this programmer wrote, and returns a line per table deleted.
func (x *NFT) Remove() ([]string, error) {
	return x.a.DeleteTables(&nftables.Table{Family: nftables.TableFamilyBridge, Name: L2Table},
		&nftables.Table{Family: nftables.TableFamilyINet, Name: FWTable})
}

// Programmer keeps one node's firewall programmed. Program makes the
// kernel match the fabric and may be called again with the same or a new
// fabric: each call writes only what differs from what the last left.
// Resync reads the kernel back and repairs what others changed, returning
// what it found different (nothing before the first Program). Close
// releases what the programmer holds; the rules stay.
type Programmer interface {
	Program(f *Fabric, node string) ([]string, error)
	Resync() ([]string, error)
	// Zones is the conntrack zone of each bridge, as last programmed.
	Zones() map[string]uint16
	Close()
}

// Zones is the conntrack zone of each bridge, as last programmed.
func (x *NFT) Zones() map[string]uint16 { return x.zones }

// NewProgrammer returns a programmer for the named renderer ("nftables",
// the default, or "iptables") in the named namespace ("": this process's).
func NewProgrammer(renderer, ns string) (Programmer, error) {
	switch renderer {
	case "iptables":
		return NewIPT(ns, nil), nil
	case "nftables", "":
		return NewNFT(ns)
	}
	return nil, fmt.Errorf("firewall renderer %q: unknown; set the spec's firewall to nftables or iptables", renderer)
}

// Program applies a node's firewall once with the named renderer
// ("nftables" or "iptables") in the named namespace.
func Program(renderer, ns string, f *Fabric, node string) ([]string, error) {
	x, err := NewProgrammer(renderer, ns)
	if err != nil {
		return nil, err
	}
	defer x.Close()
	return x.Program(f, node)
}

// parseIDs reads tap -> port ID back from the in-marks map's elements.
func parseIDs(es []nft.Elem) map[string]uint16 {
	out := map[string]uint16{}
	for _, e := range es {
		if len(e.Val) != 4 {
			continue
		}
		tap := strings.TrimRight(string(e.Key), "\x00")
		out[tap] = uint16(binary.NativeEndian.Uint32(e.Val) >> idBits)
	}
	return out
}

// ReadDrops reads, from the kernel, what the firewall in the named
// namespace has dropped, by reason, in either rendering (nftables
// counters, or the iptables layout's rule counters as iptables-save -c,
// ip6tables-save -c and ebtables-save -c print them). Reasons with nothing
// dropped are present with zeros.
func ReadDrops(ns string) (map[string]Counter, error) {
	h, err := namespace.Open(ns)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	opts := []nftables.ConnOption{}
	if ns != "" {
		opts = append(opts, nftables.WithNetNSFd(int(h)))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, err
	}
	out := map[string]Counter{}
	for _, r := range DropReasons {
		out[r] = Counter{}
	}
	for _, t := range []*nftables.Table{{Family: nftables.TableFamilyBridge, Name: L2Table}, {Family: nftables.TableFamilyINet, Name: FWTable}} {
		chains, err := c.ListChainsOfTableFamily(t.Family)
		if err != nil {
			return nil, fmt.Errorf("firewall: list chains: %w", err)
		}
		for _, ch := range chains {
			if ch.Table.Name != t.Name {
				continue
			}
			rules, err := c.GetRules(t, ch)
			if err != nil {
				return nil, fmt.Errorf("firewall: read %s %s: %w", t.Name, ch.Name, err)
			}
			for _, r := range rules {
				text, _ := userdata.GetString(r.UserData, userdata.TypeComment)
				reason := dropReason(t.Name, ch.Name, text)
				if reason == "" {
					continue
				}
				for _, e := range r.Exprs {
					if ct, ok := e.(*expr.Counter); ok {
						cur := out[reason]
						cur.Packets += ct.Packets
						cur.Bytes += ct.Bytes
						out[reason] = cur
					}
				}
			}
		}
	}
	for _, tool := range []string{"iptables-save", "ip6tables-save", "ebtables-save"} {
		saved, err := ExecIn(ns, "", tool, "-c")
		if err != nil {
			return nil, fmt.Errorf("firewall: read the iptables layout's counters: %w", err)
		}
		addIPTDrops(out, tool, saved)
	}
	return out, nil
}
