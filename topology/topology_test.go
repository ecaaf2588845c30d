package topology

import (
	"flag"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/bothnia/bothnia/plan"
	"github.com/bothnia/bothnia/spec"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func example(t *testing.T) (*spec.Spec, *plan.Plan) {
	t.Helper()
	s, err := spec.Load("../examples/knox-epouta.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := plan.Compile(s)
	if err != nil {
		t.Fatal(err)
	}
	return s, p
}

func TestGolden(t *testing.T) {
	s, p := example(t)
	got := Dot(s, p, Broken{"epouta-vm2": {"FAIL tcp/7000 knox-vm1 -> epouta-vm2: want reachable, got blocked"}})
	const golden = "testdata/knox-epouta.dot"
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Fatalf("%s differs; if intended run go test ./topology -update\n%s", golden, got)
	}
	for _, must := range []string{
		`label="site epouta (foreign) 10.101.0.0/17, cloud epouta"; style="rounded,dashed"`,
		`"net_sandbox" -> "node_knox-c1"`,
		`"vm_epouta-vm2" [shape=ellipse, color="#1f77b4", label="epouta-vm2\n10.101.0.11", style=filled, fillcolor="#ffcccc"`,
		`"router" -> "ep_uu-proxy" [label="route"]`,
		`VLAN 1203`,
	} {
		if !strings.Contains(got, must) {
			t.Errorf("the graph lacks %s", must)
		}
	}
	// The sandbox network has no VM at ePouta: no ePouta node carries it.
	if strings.Contains(got, `"net_sandbox" -> "node_epouta`) {
		t.Error("sandbox drawn onto an ePouta node")
	}
}

// dot renders the graph (CI installs graphviz).
func TestSVG(t *testing.T) {
	if _, err := exec.LookPath("dot"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("dot (graphviz) is missing; scripts/install-deps.sh installs it")
		}
		t.Skip("dot (graphviz) is not installed")
	}
	s, p := example(t)
	svg, err := SVG(Dot(s, p, nil))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(svg), "<svg") || !strings.Contains(string(svg), "knox&#45;vm1") {
		t.Fatalf("not an SVG of the fabric: %.300s", svg)
	}
}
