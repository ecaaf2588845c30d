package firewall_test

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/bothnia/bothnia/firewall"
	"github.com/bothnia/bothnia/internal/kerneltest"
	"github.com/bothnia/bothnia/namespace"
	"github.com/bothnia/bothnia/spec"
)

// bothniaLeft lists what of bothnia's firewall a namespace still holds,
// in every place either renderer writes.
func bothniaLeft(t *testing.T, ns string) []string {
	t.Helper()
	var left []string
	for _, c := range [][]string{{"nft", "list", "tables"}, {"iptables-nft-save"}, {"ip6tables-nft-save"},
		{"ebtables-nft-save"}, {"ebtables-nft-save", "-t", "nat"}, {"ipset", "list", "-n"}} {
		out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, c...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v: %s", c, err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, "bothnia") || strings.HasPrefix(line, "NIPv") {
				left = append(left, strings.Join(c, " ")+": "+line)
			}
		}
	}
	return left
}

// Switching a host back to Neutron (docs/openstack.md, "Back"): Remove
// leaves nothing of either renderer's, and a second Remove changes
// nothing.
func TestRemoveLeavesNothing(t *testing.T) {
	kerneltest.RequireRoot(t)
	for _, renderer := range []string{"nftables", "iptables"} {
		t.Run(renderer, func(t *testing.T) {
			s, err := spec.Parse([]byte(fmt.Sprintf(fabricYAML, renderer)))
			if err != nil {
				t.Fatal(err)
			}
			f, err := firewall.Compile(s)
			if err != nil {
				t.Fatal(err)
			}
			ns := kerneltest.Prefix(t) + "-rm"
			if _, err := namespace.Create(ns); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = namespace.Delete(ns) })
			p, err := firewall.NewProgrammer(renderer, ns)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.Program(f, "knox-c1"); err != nil {
				t.Fatal(err)
			}
			p.Close()
			if len(bothniaLeft(t, ns)) == 0 {
				t.Fatal("programmed, yet nothing of bothnia's found: the check sees nothing")
			}
			changes, err := firewall.Remove(ns, nil)
			if err != nil {
				t.Fatalf("remove: %v (after %q)", err, changes)
			}
			if left := bothniaLeft(t, ns); len(left) > 0 {
				t.Errorf("left after remove:\n%s", strings.Join(left, "\n"))
			}
			if again, err := firewall.Remove(ns, nil); err != nil || len(again) > 0 {
				t.Errorf("a second remove: %q, %v; want nothing", again, err)
			}
		})
	}
}
