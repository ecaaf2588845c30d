package node

import (
	"fmt"

	"github.com/bothnia/bothnia/dataplane"
	"github.com/bothnia/bothnia/firewall"
)

// Converger brings one host to a node's State. It is long-lived: it keeps
// its firewall programmer between calls, so a second Converge with a
// changed State writes only the difference, and Resync repairs drift.
// Not safe for concurrent use.
type Converger struct {
	Target     dataplane.Target // where the node's root namespace is ("" HostNS: this process's)
	NoFirewall bool             // links, routes and NAT only
	// StandIn lets the lab build a foreign site's node as that site's own
	// cloud would: plain learning bridges, and its security groups in
	// Neutron's iptables layout. Anything else refuses a foreign node.
	StandIn  bool
	fw       firewall.Programmer
	renderer string
	last     *State
}

// Result is what one Converge changed, and ports whose taps do not exist
// yet (the hypervisor has not plugged them).
type Result struct {
	Changes []string
	Pending []string
}

// Converge makes the host match st and returns what it changed. Links
// first, then the firewall: a new port's tap is in its bridge before its
// elements are, and both before anything is sent through it (the tap
// exists only once the VM boots, and the firewall drops what it does not
// know).
func (c *Converger) Converge(st *State) (*Result, error) {
	if st.Plan.Foreign && !c.StandIn {
		return &Result{}, &ForeignError{Node: st.Name, Site: st.Plan.Site}
	}
	res, err := dataplane.Apply(&st.Plan, c.Target)
	out := &Result{}
	if res != nil {
		out.Changes, out.Pending = res.Changes, res.Pending
	}
	if err != nil {
		return out, fmt.Errorf("node %s: %w", st.Name, err)
	}
	c.last = st
	if c.NoFirewall {
		return out, nil
	}
	renderer := st.Renderer
	if st.Plan.Foreign {
		// The foreign cloud's Neutron filters its ports with its own
		// iptables driver: the stand-in renders that layout.
		renderer = "iptables"
	}
	if c.fw == nil || c.renderer != renderer {
		if c.fw != nil {
			c.fw.Close()
		}
		if c.fw, err = firewall.NewProgrammer(renderer, c.Target.HostNS); err != nil {
			return out, fmt.Errorf("node %s: firewall: %w", st.Name, err)
		}
		c.renderer = renderer
	}
	ch, err := c.fw.Program(st.Firewall, st.Name)
	out.Changes = append(out.Changes, c.where(ch)...)
	if err != nil {
		return out, fmt.Errorf("node %s: firewall: %w", st.Name, err)
	}
	return out, nil
}

// Resync re-reads the kernel and repairs whatever differs from the last
// converged State (links, routes, NAT and the firewall, which a read-back
// compares element by element). It returns what it repaired.
func (c *Converger) Resync() ([]string, error) {
	if c.last == nil {
		return nil, nil
	}
	res, err := dataplane.Apply(&c.last.Plan, c.Target)
	var out []string
	if res != nil {
		out = res.Changes
	}
	if err != nil {
		return out, fmt.Errorf("node %s: %w", c.last.Name, err)
	}
	if c.fw != nil {
		drift, err := c.fw.Resync()
		out = append(out, c.where(drift)...)
		if err != nil {
			return out, fmt.Errorf("node %s: firewall: %w", c.last.Name, err)
		}
	}
	return out, nil
}

// Close releases the firewall programmer; what it programmed stays.
func (c *Converger) Close() {
	if c.fw != nil {
		c.fw.Close()
		c.fw = nil
	}
}

// where prefixes firewall changes with the namespace, as dataplane's are.
func (c *Converger) where(changes []string) []string {
	if c.Target.HostNS == "" {
		return changes
	}
	out := make([]string, len(changes))
	for i, ch := range changes {
		out[i] = c.Target.HostNS + ": " + ch
	}
	return out
}
