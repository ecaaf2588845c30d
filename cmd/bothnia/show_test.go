package main

import (
	"bytes"
	"strings"
	"testing"
)

func runShow(args ...string) (string, error) {
	c := showCmd()
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
