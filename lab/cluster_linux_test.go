package lab

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/bothnia/bothnia/store"
)

// The sites' three-member store (two members at Knox, one at ePouta) loses
// its leader: the member hangs, as one behind a cut link or a stuck host
// does. A VM booted live at ePouta in Knox's remote group still reaches
// the store, both sites' agents converge, and the VM is admitted at Knox.
func TestThreeMemberStoreLosesItsLeader(t *testing.T) {
	l, _ := newAgentLab(t, liveYAML, func(l *Lab) { l.EtcdMembers = 3 })
	if got := len(l.EtcdEndpoints()); got != 3 {
		t.Fatalf("the lab's store has %d members, want 3", got)
	}
	leader := etcdLeader(t, l)
	hang(t, l, leader)
	t.Logf("%s (the leader) hangs", leader)

	startSink(t, l.VMNS("k1"), 7000)
	t0 := time.Now()
	if _, err := l.AddVM(NewVM{Name: "e1", Network: "mgmt", Node: "epouta-c1", SecurityGroups: []string{"rg"}}); err != nil {
		t.Fatalf("a VM booted at ePouta with %s hung: %v", leader, err)
	}
	t.Logf("e1 booted and both sites converged in %v without the leader", time.Since(t0).Round(time.Millisecond))
	c, err := dialFrom(l.VMNS("e1"), "10.101.128.10:7000", time.Second)
	if err != nil {
		t.Fatalf("e1, booted at ePouta in rg while %s hung, cannot reach k1: %v", leader, err)
	}
	c.Close()
}

// etcdLeader is the lab's etcd member that says it leads.
func etcdLeader(t *testing.T, l *Lab) string {
	t.Helper()
	cli, err := store.Connect(l.storeConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	for i, ep := range l.EtcdEndpoints() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := cli.Status(ctx, ep)
		cancel()
		if err != nil {
			t.Fatalf("status of %s: %v", ep, err)
		}
		if st.Leader == st.Header.MemberId {
			return l.etcdMembers()[i]
		}
	}
	t.Fatal("no member says it leads")
	return ""
}

// hang stops a lab process (SIGSTOP) until the test ends, as a member
// that hangs without dying.
func hang(t *testing.T, l *Lab, name string) {
	t.Helper()
	pid, ok := running(l.pidFile(name))
	if !ok {
		t.Fatalf("%s is not running", name)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
}
