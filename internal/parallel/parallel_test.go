package parallel

import (
	"runtime"
	"sync/atomic"
	"testing"
)

// Every index is called exactly once, split or not.
func TestForCallsEachIndexOnce(t *testing.T) {
	for _, n := range []int{0, 1, MinPerWorker - 1, 10 * MinPerWorker} {
		for _, procs := range []int{1, 4} {
			prev := runtime.GOMAXPROCS(procs)
			calls := make([]atomic.Int32, n)
			For(n, func(i int) { calls[i].Add(1) })
			runtime.GOMAXPROCS(prev)
			for i := range calls {
				if c := calls[i].Load(); c != 1 {
					t.Fatalf("n %d, %d CPUs: index %d called %d times", n, procs, i, c)
				}
			}
		}
	}
}
