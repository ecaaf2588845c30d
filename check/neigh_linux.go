package check

import (
	"os"
	"strconv"
	"strings"
	"time"
)

// NeighbourWindow is a Pacer's window on this machine: the kernel frees
// a neighbour entry for a new one once it is five seconds old.
const NeighbourWindow = 6 * time.Second

// NeighbourPairs is how many new host pairs a Pacer should let in per
// NeighbourWindow on this machine: a quarter of the kernel's neighbour
// table limit (gc_thresh3, read, never changed), so that the entries of
// one window, two a pair, take half of it and other namespaces keep the
// rest.
func NeighbourPairs() int {
	thresh := 1024
	if b, err := os.ReadFile("/proc/sys/net/ipv4/neigh/default/gc_thresh3"); err == nil {
		if v, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && v > 0 {
			thresh = v
		}
	}
	return max(thresh/4, 16)
}
