package main

import (
	"strings"
	"testing"
)

func runRouter(args ...string) (string, error) { return run(routerCmd(), args...) }

// Each replica's conntrackd syncs over the state-sync link from its own
// address there, and ignores that link's own traffic; a node with no
// replica is told so, with the remedy.
func TestConntrackdConfiguration(t *testing.T) {
	for node, addr := range map[string]string{"knox-ctl": "169.254.192.1", "knox-c1": "169.254.192.2"} {
		out, err := runRouter("conntrackd", "--spec", "../../examples/knox-epouta-ha.yaml", "--node", node, "--print", "--run-dir", "/run/x")
		if err != nil {
			t.Fatalf("%s: %v", node, err)
		}
		for _, want := range []string{"Mode FTFW", "DisableExternalCache On", "StartupResync yes", "IPv4_interface " + addr,
			"Interface ha", "IPv4_address 169.254.192.0/24", "UNIX {\n\t\tPath /run/x/conntrackd.ctl", "LockFile /run/x/conntrackd.lock"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: configuration lacks %q:\n%s", node, want, out)
			}
		}
	}
	_, err := runRouter("conntrackd", "--spec", "../../examples/knox-epouta-ha.yaml", "--node", "knox-c2", "--print")
	if err == nil || !strings.Contains(err.Error(), "node knox-c2 holds no replica") || !strings.Contains(err.Error(), "router.nodes") {
		t.Errorf("a node without a replica: %v", err)
	}
}
