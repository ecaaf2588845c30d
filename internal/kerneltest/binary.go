package kerneltest

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
)

// BuildBothnia builds the bothnia binary into a temporary directory, for
// tests whose lab starts bothnia's servers as processes. It returns the
// path and a cleanup function.
func BuildBothnia() (string, func(), error) {
	dir, err := os.MkdirTemp("", "bothnia-test-")
	if err != nil {
		return "", nil, err
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	out := filepath.Join(dir, "bothnia")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/bothnia")
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	return out, func() { os.RemoveAll(dir) }, nil
}
