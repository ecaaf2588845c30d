package check

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// The kernel's IPv4 neighbour table is one for every network namespace,
// with a limit (gc_thresh3, 1024 by default) set in the host's own
// namespace. An entry stays unreclaimable while it is reachable (15 to 45
// s after each use), so a lab probed pair by pair (a full matrix of 96 VMs
// is 9,000 entries) fills it, and the kernel then drops packets it cannot
// resolve: check would report them as blocked. These read, never change,
// what the kernel says of it.

// NeighbourTable is the table's limit, gc_thresh3.
func NeighbourTable() int {
	if b, err := os.ReadFile("/proc/sys/net/ipv4/neigh/default/gc_thresh3"); err == nil {
		if v, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && v > 0 {
			return v
		}
	}
	return 1024
}

// NeighbourStats are the table's entries now and how many times since
// boot it refused one (table_fulls), from /proc/net/stat/arp_cache.
func NeighbourStats() (entries int, fulls uint64) {
	f, err := os.Open("/proc/net/stat/arp_cache")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	col := map[string]int{}
	for row := 0; sc.Scan(); row++ {
		fields := strings.Fields(sc.Text())
		if row == 0 {
			for i, name := range fields {
				col[name] = i
			}
			continue
		}
		hex := func(name string) uint64 {
			i, ok := col[name]
			if !ok || i >= len(fields) {
				return 0
			}
			v, _ := strconv.ParseUint(fields[i], 16, 64)
			return v
		}
		entries = int(hex("entries")) // the same on every row: the table's
		fulls += hex("table_fulls")   // per CPU
	}
	return entries, fulls
}
