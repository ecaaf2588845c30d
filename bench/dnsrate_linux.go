package bench

import (
	"bufio"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// dnsRates are the offered query rates the search steps through.
var dnsRates = []int{10000, 20000, 30000, 40000, 50000, 60000, 70000, 80000, 90000, 100000, 120000, 140000, 160000, 200000, 250000, 300000}

// dnsStep is one dnsperf run at an offered rate.
type dnsStep struct {
	offered  int
	qps      float64 // answered per second
	lostPct  float64
	p50, p99 time.Duration // only when latencies were asked for
}

var lostRE = regexp.MustCompile(`Queries lost:\s+\d+ \(([\d.]+)%\)`)

// A dnsGenerator offers rate queries per second for secs from the client
// namespace, the names of file, and reports what was answered (and, with
// latencies, the p50 and p99); ld (nil: none) is closed when it ends.
type dnsGenerator func(cli, file string, secs, rate int, latencies bool, ld *load) (dnsStep, error)

var dnsGenerators = map[string]dnsGenerator{"bothnia": dnsLoadAt, "dnsperf": dnsperfAt}

// dnsLoadAt runs DNSLoad in a process of its own in the client namespace.
// It measures latency in every run (it costs it nothing).
func dnsLoadAt(cli, file string, secs, rate int, _ bool, ld *load) (dnsStep, error) {
	st := dnsStep{offered: rate}
	var r DNSLoadResult
	if err := runGenerator(cli, secs, ld, &r, "dnsload", "--server", "10.101.128.0", "--names", file, "--rate", strconv.Itoa(rate)); err != nil {
		return st, fmt.Errorf("bench: the DNS load generator at %d/s: %w", rate, err)
	}
	if r.Sent == 0 || r.Answered == 0 {
		return st, fmt.Errorf("bench: the DNS load generator at %d/s sent %d and had %d answers", rate, r.Sent, r.Answered)
	}
	st.qps = float64(r.Answered) / r.Seconds
	st.lostPct = 100 * float64(r.Sent-r.Answered) / float64(r.Sent)
	st.p50, st.p99 = time.Duration(r.P50Usec)*time.Microsecond, time.Duration(r.P99Usec)*time.Microsecond
	return st, nil
}

// dnsperfAt runs dnsperf at one offered rate. With latencies it reports
// every answer (-v) and takes their p50 and p99. The run fails, and the
// bench with it, when dnsperf does or prints no statistics: a load
// generator's failure is never a zero.
func dnsperfAt(cli, file string, secs, rate int, latencies bool, ld *load) (dnsStep, error) {
	st := dnsStep{offered: rate}
	args := []string{"netns", "exec", cli, "dnsperf", "-s", "10.101.128.0", "-d", file, "-l", strconv.Itoa(secs),
		"-c", "8", "-T", "2", "-q", "2000", "-t", "1", "-Q", strconv.Itoa(rate)}
	if latencies {
		args = append(args, "-v")
	}
	cmd := exec.Command("ip", args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return st, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return st, err
	}
	var lat []time.Duration
	var summary strings.Builder
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "> ") {
			f := strings.Fields(line)
			if s, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
				lat = append(lat, time.Duration(s*float64(time.Second)))
			}
			continue
		}
		summary.WriteString(line + "\n")
	}
	err = cmd.Wait()
	if ld != nil {
		ld.done(cmd)
	}
	if err != nil {
		return st, fmt.Errorf("bench: dnsperf at %d/s: %v: %s%s", rate, err, summary.String(), stderr.String())
	}
	q, l := qpsRE.FindStringSubmatch(summary.String()), lostRE.FindStringSubmatch(summary.String())
	if q == nil || l == nil {
		return st, fmt.Errorf("bench: dnsperf at %d/s printed no statistics: %s", rate, summary.String())
	}
	st.qps, _ = strconv.ParseFloat(q[1], 64)
	st.lostPct, _ = strconv.ParseFloat(l[1], 64)
	if len(lat) > 0 {
		slices.Sort(lat)
		st.p50, st.p99 = lat[len(lat)/2], lat[min(len(lat)-1, len(lat)*99/100)]
	}
	return st, nil
}

// maxRate raises the offered rate until the server loses 1% or more of
// the queries or answers less than 99% of the offered rate (dnsperf stops
// sending while 2,000 queries are outstanding, so a server that falls
// behind shows fewer answers, not lost ones), and returns the
// last step it sustained with its latencies: from the step when the
// generator measures them there (bothnia's), else from a run of their own
// at that rate (printing every answer costs dnsperf time, so it is kept
// out of the search).
func maxRate(w io.Writer, what, srv, cli string, pid int, file string, secs int, gen dnsGenerator) (dnsStep, error) {
	var best dnsStep
	for _, r := range dnsRates {
		ld := startLoad(srv, cli, pid)
		st, err := gen(cli, file, secs, r, false, ld)
		if err != nil {
			return best, err
		}
		fmt.Fprintf(w, "  %-22s offered %7d/s  answered %9.0f/s  lost %6.2f%%\n", what, r, st.qps, st.lostPct)
		fmt.Fprintf(w, "  %-22s %s\n", "", ld)
		if ld.generatorBound() {
			fmt.Fprintf(w, "  %-22s the load generator used a whole core: this step measured it as much as the server\n", "")
		}
		if st.lostPct >= 1 || st.qps < 0.99*float64(r) {
			break
		}
		best = st
	}
	if best.offered == 0 {
		return best, fmt.Errorf("bench: the server lost 1%% or more already at %d queries/s", dnsRates[0])
	}
	if best.p50 > 0 {
		return best, nil // the generator measured latency in the step itself
	}
	lat, err := gen(cli, file, secs, best.offered, true, nil)
	if err != nil {
		return best, err
	}
	best.p50, best.p99 = lat.p50, lat.p99
	return best, nil
}
