package lab

import (
	"strings"
	"testing"
	"time"
)

// Issue 20's failure, in the lab: a killed node's agent is gone and its
// VMs cannot be reached; revived, its agent runs and they can again.
func TestKillAndReviveNode(t *testing.T) {
	l, _ := newAgentLab(t, liveYAML)
	startSink(t, l.VMNS("k1"), 7000)
	if _, err := l.AddVM(NewVM{Name: "e1", Network: "mgmt", Node: "epouta-c1", SecurityGroups: []string{"rg"}}); err != nil {
		t.Fatal(err)
	}
	e1 := l.VMNS("e1")
	reach := func(within time.Duration) bool {
		deadline := time.Now().Add(within)
		for {
			if c, err := dialFrom(e1, "10.101.128.10:7000", 300*time.Millisecond); err == nil {
				c.Close()
				return true
			}
			if time.Now().After(deadline) {
				return false
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if !reach(5 * time.Second) {
		t.Fatal("e1 cannot reach k1 before any kill")
	}
	done, err := l.KillNode("knox-c1")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kill knox-c1: %v", done)
	if _, ok := running(l.pidFile("agent-knox-c1")); ok {
		t.Error("knox-c1's agent runs after the kill")
	}
	if !l.Killed("knox-c1") {
		t.Error("knox-c1 is not reported killed")
	}
	if lines, complete, err := l.Status(mustSpec(t, l)); err != nil || complete || !strings.Contains(strings.Join(lines, "\n"), "KILLED") {
		t.Errorf("lab status with knox-c1 killed: complete %v, err %v:\n%s", complete, err, strings.Join(lines, "\n"))
	}
	if reach(time.Second) {
		t.Error("e1 still reaches k1 on the killed knox-c1")
	}
	if again, err := l.KillNode("knox-c1"); err != nil || len(again) > 0 {
		t.Errorf("a second kill: %v, %v; want nothing done", again, err)
	}
	done, err = l.ReviveNode("knox-c1")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("revive knox-c1: %v", done)
	if _, ok := running(l.pidFile("agent-knox-c1")); !ok {
		t.Error("knox-c1's agent does not run after the revive")
	}
	if !reach(10 * time.Second) {
		t.Error("e1 does not reach k1 10 s after knox-c1 was revived")
	}
	if again, err := l.ReviveNode("knox-c1"); err != nil || len(again) > 0 {
		t.Errorf("a second revive: %v, %v; want nothing done", again, err)
	}
}
