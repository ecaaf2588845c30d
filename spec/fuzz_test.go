package spec_test

import (
	"os"
	"testing"

	"github.com/bothnia/bothnia/firewall"
	"github.com/bothnia/bothnia/plan"
	"github.com/bothnia/bothnia/spec"
)

// FuzzParse: no input makes parsing, validation or the compilers that
// take a validated spec panic or hang. A spec that validates must compile,
// and render for every node.
func FuzzParse(f *testing.F) {
	for _, p := range []string{"../examples/knox-epouta.yaml", "../examples/knox-epouta-production.yaml"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(""))
	f.Add([]byte("---\n---\n"))
	f.Add([]byte("fabric: {name: x, cidr: 10.101.0.0/16}\nnetworks: [{name: n, id: abc, segment: 1, vms: [{name: v, node: n1, ip: 10.101.0.0, mac: 'fa:16:3e:00:00:01'}]}]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := spec.Parse(b)
		if err != nil {
			return
		}
		p, err := plan.Compile(s)
		if err != nil {
			t.Fatalf("a validated spec does not plan: %v", err)
		}
		fw, err := firewall.Compile(s)
		if err != nil {
			t.Fatalf("a validated spec does not compile to a firewall: %v", err)
		}
		for _, n := range p.Nodes {
			_ = firewall.RenderNFT(fw, n.Name).String()
			_ = firewall.RenderIPTables(fw, n.Name).String()
		}
	})
}
