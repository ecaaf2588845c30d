// Package check proves a fabric does what its spec says: it derives the
// expected reachability from the spec, runs real probes, and prints the
// matrix of expected against observed.
package check

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"

	"github.com/bothnia/bothnia/firewall"
	"github.com/bothnia/bothnia/plan"
	"github.com/bothnia/bothnia/spec"
)

// Probe kinds.
const (
	ICMP = "icmp"
	TCP  = "tcp"
)

// Target is something a probe is aimed at: a VM or an outside endpoint.
type Target struct {
	Name string
	Addr netip.Addr
	VM   bool
}

// Probe is one expectation: from a VM to a target by one protocol.
type Probe struct {
	From string // VM name
	To   Target
	Kind string
	Port int // TCP destination port
	Want bool
	// WantSource is the source address the target must see on TCP: the
	// VM's own within the fabric, the router's gw address through SNAT.
	WantSource string
}

// Result is a probe with what was observed.
type Result struct {
	Probe
	Got    bool
	Source string
	Err    string
	// Slow marks a probe that got through only when tried again.
	Slow bool `json:",omitempty"`
}

// OK reports whether the observation matches the expectation.
func (r Result) OK() bool {
	if r.Got != r.Want {
		return false
	}
	return !r.Got || r.Kind != TCP || r.WantSource == "" || r.Source == r.WantSource
}

// VMs returns the spec's VMs in spec order, as targets.
func VMs(s *spec.Spec) []Target {
	var out []Target
	for _, n := range s.Networks {
		for _, vm := range n.VMs {
			out = append(out, Target{Name: vm.Name, Addr: netip.MustParseAddr(vm.IP), VM: true})
		}
	}
	return out
}

// Endpoint is an address outside the fabric the lab provides.
type Endpoint struct {
	Name    string
	Addr    netip.Addr
	Allowed bool
}

// Expect derives every probe and its expected outcome from the spec and
// its compiled firewall: VMs of one network reach each other, within and
// across sites, on what both ports' security groups allow (egress of the
// sender, ingress of the receiver); VMs of different networks never do;
// VMs of the router's network reach the allowlisted endpoints, as their
// egress rules allow, and the endpoints see the SNAT address; nothing
// reaches an endpoint off the allowlist.
func Expect(s *spec.Spec, fw *firewall.Fabric, endpoints []Endpoint) []Probe {
	netOf := map[string]string{}
	for _, n := range s.Networks {
		for _, vm := range n.VMs {
			netOf[vm.Name] = n.Name
		}
	}
	infra := plan.InfraNetwork(s)
	ports := s.Lab.Ports
	var out []Probe
	for _, from := range VMs(s) {
		fp := fw.Port(from.Name)
		for _, to := range VMs(s) {
			if from.Name == to.Name {
				continue
			}
			same := netOf[from.Name] == netOf[to.Name]
			tp := fw.Port(to.Name)
			icmp := firewall.Packet{Src: from.Addr, Dst: to.Addr, Proto: 1, Port: 8}
			out = append(out, Probe{From: from.Name, To: to, Kind: ICMP, Want: same && fw.Allows(fp, tp, icmp)})
			for _, port := range ports {
				tcp := firewall.Packet{Src: from.Addr, Dst: to.Addr, Proto: 6, Port: port}
				want := same && fw.Allows(fp, tp, tcp)
				src := ""
				if want {
					src = from.Addr.String()
				}
				out = append(out, Probe{From: from.Name, To: to, Kind: TCP, Port: port, Want: want, WantSource: src})
			}
		}
		routed := s.Router != nil && infra != nil && netOf[from.Name] == infra.Name
		for _, ep := range endpoints {
			to := Target{Name: ep.Name, Addr: ep.Addr}
			icmp := firewall.Packet{Src: from.Addr, Dst: ep.Addr, Proto: 1, Port: 8}
			tcp := firewall.Packet{Src: from.Addr, Dst: ep.Addr, Proto: 6, Port: ports[0]}
			wantTCP := routed && ep.Allowed && fw.Allows(fp, nil, tcp)
			src := ""
			if wantTCP {
				src = from.Addr.String()
				if *s.Router.SNAT {
					src = s.Router.External.Router
				}
			}
			out = append(out,
				Probe{From: from.Name, To: to, Kind: ICMP, Want: routed && ep.Allowed && fw.Allows(fp, nil, icmp)},
				Probe{From: from.Name, To: to, Kind: TCP, Port: ports[0], Want: wantTCP, WantSource: src})
		}
	}
	return out
}

// Prober sends real probes. Implementations must be safe for concurrent use.
type Prober interface {
	// ICMP reports whether an echo from the VM to addr is answered.
	ICMP(ctx context.Context, fromVM string, addr netip.Addr) error
	// TCP connects from the VM to addr:port and returns the source address
	// the far end saw.
	TCP(ctx context.Context, fromVM string, addr netip.Addr, port int) (string, error)
}

// Run sends every probe and returns the results in probe order. Probes
// expected to get through go first, at most workers at a time: they are
// real traffic, and a machine loaded with probes must not make them late.
// One that fails is tried again before it counts as blocked (a neighbour
// not yet resolved, a listener not yet scheduled), and marked slow if the
// second try gets through. Probes expected to be blocked only wait out
// their timeout, so sixteen times as many run at once.
func Run(ctx context.Context, probes []Probe, p Prober, workers int) []Result {
	out := make([]Result, len(probes))
	var allowed, blocked []int
	for i, pr := range probes {
		if pr.Want {
			allowed = append(allowed, i)
		} else {
			blocked = append(blocked, i)
		}
	}
	send := func(pr Probe) Result {
		r := Result{Probe: pr}
		var err error
		switch pr.Kind {
		case ICMP:
			err = p.ICMP(ctx, pr.From, pr.To.Addr)
		case TCP:
			r.Source, err = p.TCP(ctx, pr.From, pr.To.Addr, pr.Port)
		}
		r.Got = err == nil
		if err != nil {
			r.Err = err.Error()
		}
		return r
	}
	phase := func(idx []int, workers int, retry bool) {
		sem := make(chan struct{}, workers)
		var wg sync.WaitGroup
		for _, i := range idx {
			wg.Add(1)
			sem <- struct{}{}
			go func(i int) {
				defer wg.Done()
				defer func() { <-sem }()
				r := send(probes[i])
				if retry && !r.Got && ctx.Err() == nil {
					if again := send(probes[i]); again.Got {
						r, r.Slow = again, true
					}
				}
				out[i] = r
			}(i)
		}
		wg.Wait()
	}
	phase(allowed, workers, true)
	phase(blocked, 16*workers, false)
	return out
}

// Failed counts results that differ from their expectation.
func Failed(rs []Result) int {
	n := 0
	for _, r := range rs {
		if !r.OK() {
			n++
		}
	}
	return n
}

// Matrix renders results as a table, one row per source VM and one column
// per target. A cell has one mark per probe, in probe order (ICMP, then TCP
// per port): "+" reached as expected, "." blocked as expected, "X" differs.
// Every difference is then listed with what was wanted.
func Matrix(rs []Result) string {
	var rows, vmCols, cols []string
	seenRow, seenCol := map[string]bool{}, map[string]bool{}
	cells := map[[2]string]string{}
	var legendVM, legendEP []string
	for _, r := range rs {
		if !seenRow[r.From] {
			seenRow[r.From] = true
			rows = append(rows, r.From)
		}
		if !seenCol[r.To.Name] {
			seenCol[r.To.Name] = true
			if r.To.VM {
				vmCols = append(vmCols, r.To.Name)
			} else {
				cols = append(cols, r.To.Name)
			}
		}
		k := [2]string{r.From, r.To.Name}
		mark := "."
		switch {
		case !r.OK():
			mark = "X"
		case r.Want:
			mark = "+"
		}
		cells[k] += mark
		if r.From == rs[0].From {
			name := r.Kind
			if r.Kind == TCP {
				name = fmt.Sprintf("tcp/%d", r.Port)
			}
			if r.To.VM && r.To.Name == firstVM(rs) {
				legendVM = append(legendVM, name)
			}
			if !r.To.VM && len(cols) == 1 && r.To.Name == cols[0] {
				legendEP = append(legendEP, name)
			}
		}
	}
	// VMs first, in the order their rows have, then the endpoints.
	sort.SliceStable(vmCols, func(i, j int) bool { return index(rows, vmCols[i]) < index(rows, vmCols[j]) })
	cols = append(vmCols, cols...)
	w := 4
	for _, s := range append(append([]string{}, rows...), cols...) {
		if len(s) > w {
			w = len(s)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-*s", w+2, "from \\ to")
	for _, c := range cols {
		fmt.Fprintf(&b, " %-*s", w, c)
	}
	b.WriteString("\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "%-*s", w+2, r)
		for _, c := range cols {
			s := cells[[2]string{r, c}]
			switch {
			case s == "" && r == c:
				s = "="
			case s == "":
				s = "~"
			}
			fmt.Fprintf(&b, " %-*s", w, s)
		}
		b.WriteString("\n")
	}
	fail := Failed(rs)
	fmt.Fprintf(&b, "\ncells: VM targets %s; endpoints %s\n", strings.Join(legendVM, " "), strings.Join(legendEP, " "))
	fmt.Fprintf(&b, "+ reached as expected, . blocked as expected, X differs (listed below), = self,\n~ not probed: a pair like it was (check --full probes every pair)\n")
	slow := 0
	for _, r := range rs {
		if r.Slow {
			slow++
		}
	}
	fmt.Fprintf(&b, "%d probes, %d passed, %d failed", len(rs), len(rs)-fail, fail)
	if slow > 0 {
		fmt.Fprintf(&b, ", %d slow (answered only when tried again)", slow)
	}
	b.WriteString("\n")
	var bad []string
	for _, r := range rs {
		if r.OK() {
			continue
		}
		want := "blocked"
		if r.Want {
			want = "reachable"
			if r.WantSource != "" && r.Kind == TCP {
				want += " seen from " + r.WantSource
			}
		}
		got := "blocked (" + r.Err + ")"
		if r.Got {
			got = "reachable"
			if r.Source != "" {
				got += " seen from " + r.Source
			}
		}
		kind := r.Kind
		if r.Kind == TCP {
			kind = fmt.Sprintf("tcp/%d", r.Port)
		}
		bad = append(bad, fmt.Sprintf("FAIL %s %s -> %s (%s): want %s, got %s", kind, r.From, r.To.Name, r.To.Addr, want, got))
	}
	sort.Strings(bad)
	for _, l := range bad {
		b.WriteString(l + "\n")
	}
	return b.String()
}

func firstVM(rs []Result) string {
	for _, r := range rs {
		if r.To.VM {
			return r.To.Name
		}
	}
	return ""
}

func index(s []string, x string) int {
	for i, v := range s {
		if v == x {
			return i
		}
	}
	return len(s)
}
