package lab

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/bothnia/bothnia/namespace"
	"github.com/bothnia/bothnia/node"
	"github.com/bothnia/bothnia/spec"
)

// Status describes every namespace the lab should have and whether it
// exists, one line each.
func (l *Lab) Status(s *spec.Spec) ([]string, bool, error) {
	ls, err := LabSpec(s)
	if err != nil {
		return nil, false, err
	}
	fab, err := node.Desired(ls)
	if err != nil {
		return nil, false, err
	}
	p := fab.Plan()
	var want []string
	for _, sn := range ls.SiteNames() {
		want = append(want, l.SwitchNS(sn))
	}
	for i, n := range p.Nodes {
		want = append(want, l.NodeNS(n.Name))
		if !l.cloudRuns(fab.Nodes[i]) { // the site's Neutron makes its own
			for _, ns := range n.Namespaces[1:] {
				want = append(want, l.SubPrefix(n.Name)+ns.Name)
			}
		}
		for _, port := range n.Ports {
			want = append(want, l.VMNS(port.VM))
		}
	}
	if ls.Router != nil {
		want = append(want, l.OutsideNS())
		if ls.Router.External.Device != "" {
			want = append(want, l.ExternalSwitchNS())
		}
	}
	have, err := namespace.List(l.All())
	if err != nil {
		return nil, false, err
	}
	haveSet := map[string]bool{}
	for _, h := range have {
		haveSet[h] = true
	}
	all := true
	var lines []string
	for _, w := range want {
		state := "up"
		if !haveSet[w] {
			state, all = "MISSING", false
		}
		delete(haveSet, w)
		lines = append(lines, fmt.Sprintf("%-8s %s", state, w))
	}
	for h := range haveSet {
		lines = append(lines, fmt.Sprintf("%-8s %s", "extra", h))
	}
	for _, n := range p.Nodes {
		if l.Killed(n.Name) {
			all = false
			lines = append(lines, fmt.Sprintf("%-8s %s (its plug pulled: bothnia lab node revive %s)", "KILLED", l.NodeNS(n.Name), n.Name))
		}
	}
	fabricFile := filepath.Join(l.stateDir(), "fabric.yaml")
	for _, sv := range l.services(fab, fabricFile) {
		state := "running"
		if _, ok := running(l.pidFile(sv.name)); !ok {
			state, all = "STOPPED", false
		}
		lines = append(lines, fmt.Sprintf("%-8s %s (%s, log %s)", state, sv.name, sv.ns, l.ServiceLog(sv.name)))
	}
	// The control plane, when the lab runs one (lab up without --direct).
	if members := l.etcdMembers(); fileExists(l.pidFile(members[0])) {
		var procs []struct{ name, what string }
		for i, m := range members {
			procs = append(procs, struct{ name, what string }{m, "the store, " + l.EtcdEndpoints()[i]})
		}
		for _, st := range fab.Nodes {
			what := "converges " + st.Name
			switch {
			case l.cloudRuns(st):
				continue
			case st.Plan.Foreign:
				what = "stands in for site " + st.Plan.Site + "'s own cloud on " + st.Name
			}
			procs = append(procs, struct{ name, what string }{"agent-" + st.Name, what})
		}
		for _, pr := range procs {
			state := "running"
			if _, ok := running(l.pidFile(pr.name)); !ok {
				state, all = "STOPPED", false
			}
			lines = append(lines, fmt.Sprintf("%-8s %s (%s, log %s)", state, pr.name, pr.what, l.ServiceLog(pr.name)))
		}
	}
	if r := ls.Router; r != nil && r.Replicated() && l.AgentsRunning() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		at, _, err := l.RouterServing(ctx, ls)
		cancel()
		switch {
		case err != nil:
			all = false
			lines = append(lines, fmt.Sprintf("%-8s router %s: %v", "UNKNOWN", r.Name, err))
		case at == "":
			all = false
			lines = append(lines, fmt.Sprintf("%-8s router %s: no replica serves (replicas %v)", "DOWN", r.Name, r.Replicas()))
		default:
			lines = append(lines, fmt.Sprintf("%-8s router %s on %s (replicas %v)", "serving", r.Name, at, r.Replicas()))
		}
	}
	neutron, ok := l.neutronStatus(ls)
	return append(lines, neutron...), all && ok, nil
}
