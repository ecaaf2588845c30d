package ml2

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bothnia/bothnia/lab"
	"github.com/bothnia/bothnia/plan"
	"github.com/bothnia/bothnia/store"
)

// The Python unit tests, with the Python neutron-server runs.
func TestPythonUnits(t *testing.T) {
	if _, err := exec.LookPath("/usr/bin/python3"); err != nil {
		t.Skip("no /usr/bin/python3")
	}
	cmd := exec.Command("/usr/bin/python3", "-m", "unittest", "-v", "tests/test_fabric.py")
	cmd.Env = append(os.Environ(), "PYTHONPATH=.")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("python unit tests: %v\n%s", err, out)
	}
}

// Issue 18: a fabric port Nova binds on a host where bothnia's agent runs
// is bound by bothnia (vif_type tap), goes ACTIVE only once bothnia's
// agent reports its tap programmed, and within 2 s of that; a host whose
// agent is dead gets no binding from bothnia.
func TestDriverInsideNeutron(t *testing.T) {
	b := newBed(t)

	p := b.bind("vm1", b.net, b.subnet, "10.101.128.10", "knox-c1")
	if p.VIFType != "tap" {
		t.Fatalf("a fabric port on knox-c1 (bothnia's agent alive) is bound as %q, want tap (bothnia's): details %v", p.VIFType, p.VIFDetails)
	}
	if p.Status == "ACTIVE" {
		t.Fatal("the port is ACTIVE before its tap exists")
	}
	t0 := time.Now()
	b.tap("knox-c1", p, "", 16) // vif_type tap: Nova makes the tap only
	var tUp, tActive time.Time
	for time.Since(t0) < 60*time.Second && tActive.IsZero() {
		up := b.upKey("knox-c1", p.ID)
		if up && tUp.IsZero() {
			tUp = time.Now()
		}
		if b.status(p.ID) == "ACTIVE" {
			tActive = time.Now()
			if tUp.IsZero() {
				t.Fatal("the port went ACTIVE before bothnia's agent reported it up")
			}
			if masterOf(t, b.l.NodeNS("knox-c1"), plan.TapName(p.ID)) == "" {
				t.Error("ACTIVE, but its tap is in no bridge")
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if tActive.IsZero() {
		t.Fatalf("the port is %s 60 s after its tap appeared (reported up: %v)\n%s", b.status(p.ID), !tUp.IsZero(), b.debug())
	}
	if d := tActive.Sub(tUp); d > 2*time.Second {
		t.Errorf("ACTIVE %s after bothnia's agent reported the port up; want within 2 s", d)
	}
	t.Logf("tap made -> reported up by bothnia's agent: %s; -> ACTIVE: %s", tUp.Sub(t0).Round(time.Millisecond), tActive.Sub(t0).Round(time.Millisecond))

	// Neutron's own agent on the same node, for another network (a flat
	// one on physnet2): what it takes from the binding PUT to ACTIVE,
	// beside bothnia for a fabric port; and what it does to bothnia's taps.
	// The hypervisor may make the tap well after the port reached the
	// store and the agent converged with it pending; nothing in the
	// store changes then. The agent must still plug it and report it up
	// at once (it waited for the next store change, which may not come).
	t.Run("tap after the converge", func(t *testing.T) {
		b := b.in(t)
		p := b.bind("late", b.net, b.subnet, "10.101.128.12", "knox-c1")
		var portRev int64
		if !waitFor(20*time.Second, func() bool {
			resp, err := b.cli.Get(b.ctx, store.PortKey("mgmt", p.Name))
			if err != nil || len(resp.Kvs) == 0 {
				return false
			}
			portRev = resp.Kvs[0].ModRevision
			st, err := b.cli.Get(b.ctx, store.StatusKey("knox-c1"))
			var status struct{ Revision int64 }
			return err == nil && len(st.Kvs) == 1 && json.Unmarshal(st.Kvs[0].Value, &status) == nil && status.Revision >= portRev
		}) {
			t.Fatalf("knox-c1's agent did not converge with the port in 20 s\n%s", b.debug())
		}
		time.Sleep(3 * time.Second) // past the lab's resync (2 s)
		t0 := time.Now()
		b.tap("knox-c1", p, "", 16)
		if !waitFor(2*time.Second, func() bool { return b.upKey("knox-c1", p.ID) }) {
			t.Fatalf("the tap made 3 s after the agent converged with its port is not reported up 2 s later\n%s", b.debug())
		}
		t.Logf("tap made after the converge -> reported up: %s", time.Since(t0).Round(time.Millisecond))
	})

	t.Run("beside Neutron's own agent", func(t *testing.T) {
		b := b.in(t)
		node := b.l.NodeNS("knox-c1")
		other, otherSub := b.neutronAgent()
		const runs = 3
		var lbT, bnT time.Duration
		for i := 0; i < runs; i++ {
			lb, d := b.boot(fmt.Sprintf("other%d", i), other, otherSub, fmt.Sprintf("10.202.0.%d", 10+i), "brq"+other[:11], 24)
			if lb.VIFType != "bridge" {
				t.Fatalf("the other network's port is bound as %q, want bridge (linuxbridge's)", lb.VIFType)
			}
			lbT += d
			bn, d := b.boot(fmt.Sprintf("fab%d", i), b.net, b.subnet, fmt.Sprintf("10.101.128.%d", 20+i), "", 16)
			if bn.VIFType != "tap" {
				t.Fatalf("the fabric port is bound as %q beside Neutron's agent, want tap", bn.VIFType)
			}
			bnT += d
		}
		t.Logf("binding PUT -> ACTIVE, mean of %d on knox-c1: Neutron's linuxbridge agent %s, bothnia %s (%.2fx)",
			runs, (lbT / runs).Round(time.Millisecond), (bnT / runs).Round(time.Millisecond), float64(lbT)/float64(bnT))
		// What the unmodified linuxbridge agent did to bothnia's taps.
		out, _ := exec.Command("ip", "netns", "exec", node, "iptables-save").CombinedOutput()
		chains := 0
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "-A neutron-linuxbri-") && strings.Contains(line, plan.TapName(p.ID)) {
				chains++
			}
		}
		t.Logf("linuxbridge agent rules naming bothnia's tap %s: %d", plan.TapName(p.ID), chains)
		// The linuxbridge agent sees bothnia's taps and, unable to wire
		// them (the fabric's physical network is not its), reports them
		// down; bothnia's driver holds them ACTIVE while its agent has
		// them up.
		active := false
		for i := 0; i < 50 && !active; i++ {
			active = b.status(p.ID) == "ACTIVE"
			time.Sleep(100 * time.Millisecond)
		}
		if !active {
			t.Errorf("vm1's port is %s beside the linuxbridge agent, though bothnia's agent has it up", b.status(p.ID))
		}
	})

	t.Run("shared host", func(t *testing.T) { sharedHost(t, b.in(t)) })
	t.Run("switch over and back", func(t *testing.T) { switchOverAndBack(t, b.in(t)) })

	t.Run("dead host", func(t *testing.T) {
		pidFile := filepath.Join(lab.StateDir, b.l.Prefix, "agent-knox-c2.pid")
		raw, err := os.ReadFile(pidFile)
		if err != nil {
			t.Fatal(err)
		}
		var pid int
		fmt.Sscan(string(raw), &pid)
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		// Its status key goes with its lease (10 s).
		deadline := time.Now().Add(20 * time.Second)
		for {
			resp, err := b.cli.Get(b.ctx, store.StatusKey("knox-c2"))
			if err == nil && len(resp.Kvs) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("knox-c2's status stayed in the store after its agent died")
			}
			time.Sleep(200 * time.Millisecond)
		}
		time.Sleep(1500 * time.Millisecond) // the driver's cache of the store
		q := b.bind("vm2", b.net, b.subnet, "10.101.128.11", "knox-c2")
		if q.VIFType == "tap" {
			t.Errorf("a port on knox-c2, whose agent is dead, was bound by bothnia")
		}
		t.Logf("knox-c2 dead: bound as %q", q.VIFType)
	})
}
