package firewall_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/bothnia/bothnia/firewall"
	"github.com/bothnia/bothnia/internal/kerneltest"
	"github.com/bothnia/bothnia/namespace"
	"github.com/bothnia/bothnia/spec"
)

// One refused set must not keep the rest of a node's programming from the
// kernel (issue 16, point 4): every later step still runs, each set is
// restored on its own, and the error names what failed.
func TestIPTablesOneRefusedSetStopsNothingElse(t *testing.T) {
	raw := strings.Replace(fmt.Sprintf(fabricYAML, "iptables"), "rules: []\n  - name: quiet",
		"rules: [{direction: ingress, protocol: tcp, remote_group: client}]\n  - name: quiet", 1)
	s, err := spec.Parse([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	f, err := firewall.Compile(s)
	if err != nil {
		t.Fatal(err)
	}
	var ran []string
	run := func(ns, stdin, name string, args ...string) (string, error) {
		ran = append(ran, name+" "+strings.Join(args, " "))
		if name == "ipset" && strings.Contains(stdin, "create "+firewall.IPSetName("web", false)+" ") {
			return "", errors.New("ipset: refused")
		}
		return "", nil
	}
	// Program sets the namespace's br_netfilter switches for real: give
	// it a namespace of the test's own.
	kerneltest.RequireRoot(t)
	ns := kerneltest.Prefix(t) + "-steps"
	if _, err := namespace.Create(ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = namespace.Delete(ns) })
	x := firewall.NewIPT(ns, run)
	_, err = x.Program(f, "knox-c1")
	if err == nil || !strings.Contains(err.Error(), "ipset: refused") {
		t.Fatalf("err = %v, want the refused set named", err)
	}
	joined := strings.Join(ran, "\n")
	for _, want := range []string{"iptables-nft-restore --noflush", "ip6tables-nft-restore --noflush", "ebtables-nft-restore --noflush"} {
		if !strings.Contains(joined, want) {
			t.Errorf("%s did not run after a set was refused:\n%s", want, joined)
		}
	}
	if n := strings.Count(joined, "ipset restore"); n < 2 {
		t.Errorf("sets restored together (%d ipset restore calls), so one refusal takes the others with it:\n%s", n, joined)
	}
}
