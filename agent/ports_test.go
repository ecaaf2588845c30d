package agent

import (
	"os"
	"testing"

	"github.com/bothnia/bothnia/node"
	"github.com/bothnia/bothnia/plan"
	"github.com/bothnia/bothnia/spec"
)

// A port is up when its node converged and it is neither pending (no tap
// yet) nor held (the firewall could not be programmed); it is named by
// its Neutron port UUID, as the ML2 driver knows it.
func TestUpPorts(t *testing.T) {
	raw, err := os.ReadFile("../examples/knox-epouta.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s, err := spec.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	fab, err := node.Desired(s)
	if err != nil {
		t.Fatal(err)
	}
	st, err := fab.Node("knox-c1")
	if err != nil {
		t.Fatal(err)
	}
	vm1, n := s.VM("knox-vm1")
	sb, sn := s.VM("sandbox-vm1")
	id1, idSB := s.PortID(n, vm1), s.PortID(sn, sb)
	up := upPorts(s, st, pendingTaps(&node.Result{Pending: []string{plan.TapName(idSB) + " (vm sandbox-vm1): held out of its bridge"}}))
	if len(up) != 1 || up[id1] != plan.TapName(id1) {
		t.Errorf("up %v, want knox-vm1's port %s alone (sandbox-vm1's is held)", up, id1)
	}
	if up := upPorts(s, st, pendingTaps(&node.Result{})); len(up) != 2 || up[idSB] == "" {
		t.Errorf("nothing pending: up %v, want both of knox-c1's ports", up)
	}
}
