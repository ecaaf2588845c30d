package node

import (
	"errors"
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

// Converge makes the host match st and returns what it changed. The
// firewall first, then links: a new port's rules are in before its tap
// joins its bridge, so no tap passes a frame its rules would not. If the
// firewall could not be programmed, the links are still converged (a
// removed port still leaves, a bridge still gets its uplink) but no new
// tap joins its bridge: it stays pending until a converge programs the
// firewall.
func (c *Converger) Converge(st *State) (*Result, error) {
	if st.Plan.Foreign && !c.StandIn {
		return &Result{}, &ForeignError{Node: st.Name, Site: st.Plan.Site}
	}
	out := &Result{}
	var fwErr error
	if !c.NoFirewall {
		ch, err := c.program(st)
		out.Changes = append(out.Changes, c.where(ch)...)
		if err != nil {
			fwErr = fmt.Errorf("node %s: firewall: %w", st.Name, err)
		}
	}
	t := c.Target
	t.HoldNewPorts = fwErr != nil
	res, err := dataplane.Apply(&st.Plan, t)
	if res != nil {
		out.Changes, out.Pending = append(out.Changes, res.Changes...), res.Pending
	}
	if err != nil {
		return out, errors.Join(fwErr, fmt.Errorf("node %s: %w", st.Name, err))
	}
	c.last = st
	return out, fwErr
}

// program programs the node's firewall with the renderer st asks for.
func (c *Converger) program(st *State) ([]string, error) {
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
		fw, err := firewall.NewProgrammer(renderer, c.Target.HostNS)
		if err != nil {
			c.fw = nil
			return nil, err
		}
		c.fw, c.renderer = fw, renderer
	}
	return c.fw.Program(st.Firewall, st.Name)
}

// Resync re-reads the kernel and repairs whatever differs from the last
// converged State (links, routes, NAT and the firewall, which a read-back
// compares element by element). It returns what it repaired.
func (c *Converger) Resync() ([]string, error) {
	if c.last == nil {
		return nil, nil
	}
	var out []string
	var fwErr error
	if !c.NoFirewall {
		var drift []string
		var err error
		if c.fw == nil {
			// The last converge could not even start a programmer.
			drift, err = c.program(c.last)
		} else {
			drift, err = c.fw.Resync()
		}
		out = append(out, c.where(drift)...)
		if err != nil {
			fwErr = fmt.Errorf("node %s: firewall: %w", c.last.Name, err)
		}
	}
	t := c.Target
	// As in Converge: no tap joins its bridge while the firewall is not
	// programmed.
	t.HoldNewPorts = fwErr != nil
	res, err := dataplane.Apply(&c.last.Plan, t)
	if res != nil {
		out = append(out, res.Changes...)
	}
	if err != nil {
		return out, errors.Join(fwErr, fmt.Errorf("node %s: %w", c.last.Name, err))
	}
	return out, fwErr
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
