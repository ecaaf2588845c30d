// Package parallel runs a loop's independent iterations on every CPU when
// there are enough of them to pay for it.
package parallel

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// MinPerWorker is how many iterations a worker must have before a loop is
// split: below it, goroutines cost more than they save.
const MinPerWorker = 256

// For calls f(i) for every i in [0, n): in this goroutine when n is small
// or there is one CPU, else on every CPU, each taking the next i. f must be
// safe to call concurrently for different i. For returns when all calls
// have.
func For(n int, f func(i int)) {
	workers := min(runtime.GOMAXPROCS(0), n/MinPerWorker)
	if workers < 2 {
		for i := 0; i < n; i++ {
			f(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				f(i)
			}
		}()
	}
	wg.Wait()
}
