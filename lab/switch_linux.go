package lab

import (
	"fmt"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/bothnia/bothnia/internal/devcloud"
	"github.com/bothnia/bothnia/plan"
)

// What switching a Knox host between Neutron's linuxbridge agent and
// bothnia's (docs/openstack.md) needs of the lab: the agent stopped and
// started as systemd would, and the host's cabling as a Neutron host has
// it, which the lab must stand in for because this kernel has no 802.1Q.

// StopAgent stops a node's bothnia agent as "systemctl stop" does
// (SIGTERM, SIGKILL after 10 s); what it programmed stays in the kernel.
func (l *Lab) StopAgent(nodeName string) error {
	unlock, err := l.lock()
	if err != nil {
		return err
	}
	defer unlock()
	return stop(l.pidFile("agent-"+nodeName), 10*time.Second)
}

// StartAgent starts a managed node's bothnia agent again, with the
// arguments Up gave it.
func (l *Lab) StartAgent(nodeName string) error {
	unlock, err := l.lock()
	if err != nil {
		return err
	}
	defer unlock()
	_, err = l.startServices([]service{l.agent(nodeName, false)})
	return err
}

// NeutronCabling gives a managed node what a Knox host wired by Neutron's
// linuxbridge agent has for the fabric's segments: em1, and em1.<segment>
// for the agent to bridge. On a real host em1.<segment> is a VLAN device
// on the fibre; here it is one end of a veth into a lab-owned bridge with
// a VXLAN device of the segment that floods to every other node, as the
// fibre reaches them all. Its tunnel has the VNI, port and address of
// bothnia's own uplink for the segment, so the two cannot both be there:
// remove one before making the other (RemoveNeutronCabling).
func (l *Lab) NeutronCabling(nodeName string) error {
	unlock, err := l.lock()
	if err != nil {
		return err
	}
	defer unlock()
	tunnels, err := l.trunks(nodeName)
	if err != nil {
		return err
	}
	e := newEnsurer()
	defer e.close()
	return neutronCabling(e, l.NodeNS(nodeName), tunnels)
}

// RemoveNeutronCabling deletes em1.<segment> and the lab's trunk behind
// it, and em1: what NeutronCabling made.
func (l *Lab) RemoveNeutronCabling(nodeName string) error {
	unlock, err := l.lock()
	if err != nil {
		return err
	}
	defer unlock()
	tunnels, err := l.trunks(nodeName)
	if err != nil {
		return err
	}
	e := newEnsurer()
	defer e.close()
	ns := l.NodeNS(nodeName)
	h, err := e.handle(ns)
	if err != nil {
		return err
	}
	names := []string{devcloud.PhysDev}
	for _, t := range tunnels {
		seg := t.VXLAN.VNI
		names = append(names, subIface(seg), t.Name, trunkBridge(seg))
	}
	for _, name := range names {
		if link, err := h.LinkByName(name); err == nil {
			if err := h.LinkDel(link); err != nil {
				return fmt.Errorf("%s: delete %s: %w", ns, name, err)
			}
		} else if _, missing := err.(netlink.LinkNotFoundError); !missing {
			return fmt.Errorf("%s: %s: %w", ns, name, err)
		}
	}
	return nil
}

// trunks are a node's tunnels for the lab's stand-in of the fibre, one
// per segment of the fabric: a VXLAN device like bothnia's uplinks (taken
// from a node that has one; a node hosting none of a network's VMs has
// none), renamed, from this node's underlay address, flooding to every
// other node.
func (l *Lab) trunks(nodeName string) ([]plan.Link, error) {
	_, ls, fab, err := l.running()
	if err != nil {
		return nil, err
	}
	self := ls.Node(nodeName)
	if self == nil {
		return nil, fmt.Errorf("lab: no node %s in the lab's spec", nodeName)
	}
	var floods []plan.FDB
	for _, n := range ls.NodeNames() {
		if n != nodeName {
			floods = append(floods, plan.FDB{MAC: plan.FloodMAC, Dst: ls.Node(n).Underlay})
		}
	}
	byVNI := map[int]plan.Link{}
	for _, st := range fab.Nodes {
		for _, link := range st.Plan.Namespace(plan.HostNS).Links {
			if link.Kind != plan.VXLAN {
				continue
			}
			if _, ok := byVNI[link.VXLAN.VNI]; ok {
				continue
			}
			vx := *link.VXLAN
			vx.Local = self.Underlay
			link.VXLAN, link.Name, link.FDB, link.Master = &vx, fmt.Sprintf("tkx%d", vx.VNI), floods, ""
			byVNI[vx.VNI] = link
		}
	}
	var out []plan.Link
	for _, n := range ls.Networks {
		if link, ok := byVNI[n.Segment]; ok {
			out = append(out, link)
		}
	}
	return out, nil
}
