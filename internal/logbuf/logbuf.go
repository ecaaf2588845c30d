// Package logbuf buffers a log's writes and flushes them a few times a
// second: a DHCP server logging every lease at thousands of leases per
// second would otherwise spend a write system call on each line.
package logbuf

import (
	"bufio"
	"io"
	"sync"
	"time"
)

// Writer is a buffered writer flushed every interval and on Close.
// Lines reach the underlying writer at most one interval late.
type Writer struct {
	mu   sync.Mutex
	b    *bufio.Writer
	stop chan struct{}
	done chan struct{}
}

// New buffers w, flushing every interval.
func New(w io.Writer, interval time.Duration) *Writer {
	x := &Writer{b: bufio.NewWriterSize(w, 64<<10), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(x.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-x.stop:
				return
			case <-t.C:
				x.Flush()
			}
		}
	}()
	return x
}

func (x *Writer) Write(p []byte) (int, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.b.Write(p)
}

// Flush writes out what is buffered.
func (x *Writer) Flush() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.b.Flush()
}

// Close stops the flusher and flushes.
func (x *Writer) Close() error {
	close(x.stop)
	<-x.done
	return x.Flush()
}
