package lab

import (
	"fmt"
	"os"
	"testing"

	"github.com/bothnia/bothnia/internal/kerneltest"
)

func TestMain(m *testing.M) {
	exe, cleanup, err := kerneltest.BuildBothnia()
	if err != nil {
		fmt.Fprintln(os.Stderr, "build bothnia for the lab's servers:", err)
		os.Exit(1)
	}
	Exe = exe
	code := m.Run()
	cleanup()
	os.Exit(code)
}
