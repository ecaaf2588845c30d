package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func runShow(args ...string) (string, error) { return run(showCmd(), args...) }

// run executes a command as the CLI would, returning what it printed.
func run(c *cobra.Command, args ...string) (string, error) {
	var out bytes.Buffer
	c.SetOut(&out)
	c.SetErr(&out)
	c.SetArgs(args)
	err := c.Execute()
	return out.String(), err
}

func TestShowFirewallRefusesUnknownRenderer(t *testing.T) {
	_, err := runShow("firewall", "../../examples/knox-epouta.yaml", "--node", "knox-c1", "--renderer", "foo")
	if err == nil || !strings.Contains(err.Error(), `--renderer "foo" is not a renderer`) {
		t.Fatalf("want an error naming the renderer, got %v", err)
	}
	out, err := runShow("firewall", "../../examples/knox-epouta.yaml", "--node", "knox-c1", "--renderer", "iptables")
	if err != nil || !strings.Contains(out, "# ip6tables") || strings.Contains(out, "# nftables") {
		t.Fatalf("iptables alone, with its IPv6 half: err %v\n%s", err, out)
	}
}

// The JSON forms carry what docs/output.md says they do.
func TestJSONOutputs(t *testing.T) {
	out, err := runShow("firewall", "../../examples/knox-epouta.yaml", "--node", "knox-c1", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var fw struct {
		Node     string `json:"node"`
		NFTables struct {
			Tables []struct {
				Family, Name string
				Sets         []struct {
					Name, Type string
					Elements   []string
				}
				Chains []struct {
					Name, Hook string
					Rules      []string
				}
			}
		} `json:"nftables"`
		IPTables struct{ Filter, Filter6, Raw []struct{ Name string } } `json:"iptables"`
	}
	if err := json.Unmarshal([]byte(out), &fw); err != nil {
		t.Fatalf("show firewall -o json: %v\n%s", err, out)
	}
	if fw.Node != "knox-c1" || len(fw.NFTables.Tables) != 2 || len(fw.NFTables.Tables[0].Chains) == 0 || len(fw.NFTables.Tables[0].Chains[0].Rules) == 0 ||
		len(fw.IPTables.Filter) == 0 || len(fw.IPTables.Filter6) == 0 {
		t.Fatalf("show firewall -o json lacks parts: %+v", fw)
	}
	c := planCmd()
	var buf bytes.Buffer
	c.SetOut(&buf)
	c.SetArgs([]string{"../../examples/knox-epouta.yaml", "--node", "knox-c1", "-o", "json"})
	if err := c.Execute(); err != nil {
		t.Fatal(err)
	}
	var n struct {
		Name       string
		Namespaces []struct {
			Name, Role string
			Links      []struct{ Name, Kind string }
		}
		Ports []struct{ Name, VM, IP string }
	}
	if err := json.Unmarshal(buf.Bytes(), &n); err != nil || n.Name != "knox-c1" || len(n.Namespaces) == 0 || len(n.Ports) == 0 {
		t.Fatalf("plan -o json: %v %+v", err, n)
	}
	c = planCmd()
	c.SetArgs([]string{"../../examples/knox-epouta.yaml", "-o", "xml"})
	c.SetOut(&buf)
	if err := c.Execute(); err == nil || !strings.Contains(err.Error(), `-o "xml" is not a format`) {
		t.Fatalf("-o xml: %v", err)
	}
}

// Shell completion offers the spec's nodes for --node and its VMs and
// endpoints for trace.
func TestCompletion(t *testing.T) {
	complete := func(args ...string) string {
		t.Helper()
		root := newRoot()
		var out strings.Builder
		root.SetOut(&out)
		root.SetArgs(append([]string{"__complete"}, args...))
		if err := root.Execute(); err != nil {
			t.Fatal(err)
		}
		return out.String()
	}
	got := complete("apply", "../../examples/knox-epouta.yaml", "--node", "knox-c")
	if !strings.Contains(got, "knox-ctl\nknox-c1\nknox-c2\n") || strings.Contains(got, "epouta") {
		t.Errorf("--node knox-c completes to:\n%s", got)
	}
	got = complete("trace", "--spec", "../../examples/knox-epouta.yaml", "knox-vm1", "")
	for _, want := range []string{"epouta-vm2", "uu-proxy", "not-allowlisted"} {
		if !strings.Contains(got, want+"\n") {
			t.Errorf("trace's second argument lacks %s:\n%s", want, got)
		}
	}
}
