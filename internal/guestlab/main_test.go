package guestlab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bothnia/bothnia/internal/guest"
	"github.com/bothnia/bothnia/internal/kerneltest"
	"github.com/bothnia/bothnia/spec"
)

// One fabric of guests per test binary: booting five guests under
// emulation costs about half a minute.
var (
	once   sync.Once
	shared *Fabric
	errUp  error
	share  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if shared != nil && code != 0 {
		// What the guests said, for a failed run.
		fmt.Fprint(os.Stderr, consoles(shared))
	}
	if shared != nil {
		shared.Close()
	}
	if share != "" {
		os.RemoveAll(share)
	}
	os.Exit(code)
}

// exampleVLAN is the seed's example as bothnia's VLAN mode runs it: the
// link the example already names (mode vlan, device em1), both sites
// managed so that every node is a guest with bothnia on it.
func exampleVLAN(t *testing.T) (*spec.Spec, []byte) {
	raw, err := os.ReadFile(filepath.Join(guest.RepoRoot(), "examples", "knox-epouta.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	raw = bytes.Replace(raw, []byte("mode: foreign"), []byte("mode: managed"), 1)
	s, err := spec.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if s.Link.Mode != "vlan" || s.Link.Device != "em1" {
		t.Fatalf("the example's link is %s on %s, want vlan on em1", s.Link.Mode, s.Link.Device)
	}
	return s, raw
}

// fabric returns the shared fabric, started on first use.
func fabric(t *testing.T) *Fabric {
	t.Helper()
	kerneltest.RequireRoot(t)
	once.Do(func() {
		s, raw := exampleVLAN(t)
		img, err := guest.BuildImage(guest.DefaultCache)
		if err != nil {
			errUp = err
			return
		}
		share, err = os.MkdirTemp("", "bothnia-guestlab-")
		if err != nil {
			errUp = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		start := time.Now()
		shared, errUp = Start(ctx, kerneltest.Prefix(t), img, share, s, raw)
		if errUp != nil && shared != nil {
			errUp = fmt.Errorf("%w\n%s", errUp, consoles(shared))
		}
		if shared != nil && shared.Cluster != nil {
			t.Logf("five guests booted in %s, the fabric up in them %s after the start", shared.Cluster.Booted.Round(100*time.Millisecond), time.Since(start).Round(100*time.Millisecond))
		}
	})
	if errUp != nil {
		t.Fatal(errUp)
	}
	return shared
}

// consoles is the end of every guest's console, for a failure message.
func consoles(f *Fabric) string {
	var b bytes.Buffer
	if f.Cluster == nil {
		return ""
	}
	for _, n := range f.Spec.NodeNames() {
		if g := f.Guest(n); g != nil {
			fmt.Fprintf(&b, "--- %s console:\n%s\n", n, g.Serial(15))
		}
	}
	return b.String()
}
