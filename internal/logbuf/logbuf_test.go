package logbuf

import (
	"strings"
	"sync"
	"testing"
	"time"
)

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestLinesArriveWithinAnInterval(t *testing.T) {
	var out syncBuf
	w := New(&out, 20*time.Millisecond)
	w.Write([]byte("lease a\n"))
	if out.String() != "" {
		t.Fatal("written through at once: not buffered")
	}
	deadline := time.Now().Add(2 * time.Second)
	for out.String() != "lease a\n" {
		if time.Now().After(deadline) {
			t.Fatalf("not flushed within 2 s: %q", out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	w.Write([]byte("lease b\n"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if out.String() != "lease a\nlease b\n" {
		t.Fatalf("after Close: %q", out.String())
	}
}
