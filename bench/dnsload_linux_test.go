package bench

import (
	"os"
	"path/filepath"
	"testing"

	mdns "github.com/miekg/dns"
)

// The generator's queries are what a DNS parser reads as meant.
func TestDNSLoadQueries(t *testing.T) {
	file := filepath.Join(t.TempDir(), "names")
	if err := os.WriteFile(file, []byte("vm1.fabric.test A\next2.example.org A\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	qs, err := encodeQuestions(file)
	if err != nil {
		t.Fatal(err)
	}
	if len(qs) != 2 {
		t.Fatalf("%d questions, want 2", len(qs))
	}
	m := new(mdns.Msg)
	if err := m.Unpack(query(4242, qs[1])); err != nil {
		t.Fatal(err)
	}
	if m.Id != 4242 || !m.RecursionDesired || m.Response || len(m.Question) != 1 ||
		m.Question[0].Name != "ext2.example.org." || m.Question[0].Qtype != mdns.TypeA {
		t.Fatalf("query read as %v", m)
	}
}
