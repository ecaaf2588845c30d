package lab

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/bothnia/bothnia/internal/devcloud"
	"github.com/bothnia/bothnia/internal/kerneltest"
	"github.com/bothnia/bothnia/spec"
)

func TestMain(m *testing.M) {
	exe, cleanup, err := kerneltest.BuildBothnia()
	if err != nil {
		fmt.Fprintln(os.Stderr, "build bothnia for the lab's servers:", err)
		os.Exit(1)
	}
	Exe = exe
	code := m.Run()
	shared.stop()
	cleanup()
	os.Exit(code)
}

// shared is the one real Neutron (ePouta's cloud) the test binary's labs
// with a foreign site use, started by the first of them: a deployment
// takes 15 to 30 s, a lab's hosts and objects a few seconds.
var shared sharedCloud

type sharedCloud struct {
	once sync.Once
	dir  string
	d    *devcloud.Deployment
	err  error
}

func (sh *sharedCloud) stop() {
	if sh.dir != "" {
		_ = devcloud.Stop(sh.dir)
		os.RemoveAll(sh.dir)
	}
}

// foreignCloud gives a lab whose spec has a foreign site the shared
// Neutron, unless the test asked for the stand-in.
func foreignCloud(t *testing.T, l *Lab, s *spec.Spec) {
	t.Helper()
	if mode, _ := l.foreignMode(s); mode != ForeignNeutron {
		return
	}
	if m := devcloud.Missing(true); len(m) > 0 {
		if os.Getenv("CI") != "" {
			t.Fatalf("the lab's foreign site needs %v: run scripts/install-deps.sh", m)
		}
		t.Skipf("the lab's foreign site needs %v", m)
	}
	shared.once.Do(func() {
		shared.dir, shared.err = os.MkdirTemp("", "bothnia-lab-neutron-")
		if shared.err == nil {
			shared.d, shared.err = devcloud.Start(context.Background(), shared.dir,
				devcloud.Options{Agents: true, DNSDomain: "mosler.internal"}, "epouta")
		}
	})
	if shared.err != nil {
		t.Fatalf("start the shared Neutron: %v", shared.err)
	}
	l.Cloud = shared.d
}

// standIn asks a lab for the foreign site's stand-in: for tests that do
// not claim Neutron's behaviour (scale, watch) and would pay its boots.
func standIn(l *Lab) { l.Foreign = ForeignStandIn }
