// Package kerneltest holds what tests that need the kernel share: the
// root check and a unique prefix for the namespaces a test makes.
package kerneltest

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
)

// RequireRoot fails the test under CI when not root (a kernel test must
// never pass by skipping there) and skips it on a developer's machine.
func RequireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("kernel tests need root; CI runs them as root")
	}
	t.Skip("kernel test: run as root (CI does)")
}

// Prefix returns a short unique prefix, a letter then hex digits, so
// namespaces of parallel or crashed runs never collide.
func Prefix(t *testing.T) string {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "t" + hex.EncodeToString(b)
}
