package lab

import (
	"context"
	"time"

	"github.com/bothnia/bothnia/check"
	"github.com/bothnia/bothnia/firewall"
	"github.com/bothnia/bothnia/spec"
)

// Check probes the running lab: responders in each VM and in the outside,
// probes from each VM. With full, every pair the spec implies; without,
// the pairs that tell apart everything the spec distinguishes (check.Sample).
func (l *Lab) Check(ctx context.Context, s *spec.Spec, full bool) ([]check.Result, error) {
	var nss []string
	for _, vm := range check.VMs(s) {
		nss = append(nss, l.VMNS(vm.Name))
	}
	eps := Endpoints(s)
	if len(eps) > 0 {
		nss = append(nss, l.OutsideNS())
	}
	fw, err := firewall.Compile(s)
	if err != nil {
		return nil, err
	}
	resp, err := check.Listen(nss, s.Lab.Ports)
	if err != nil {
		return nil, err
	}
	defer resp.Close()
	p := &check.NetProber{NS: l.VMNS, Timeout: 1500 * time.Millisecond}
	probes := check.Expect(s, fw, eps)
	if !full {
		probes = check.Sample(s, fw, probes)
	}
	_, fulls := check.NeighbourStats()
	rs := check.Run(ctx, probes, p, 16)
	// While the table refused entries, try the failures again (a few
	// rounds: a round of many probes can fill it again).
	for round := 0; round < 3; round++ {
		_, after := check.NeighbourStats()
		if after == fulls {
			break
		}
		fulls = after
		rs = recheck(ctx, rs, p)
	}
	return rs, nil
}

// recheck probes again, once the kernel's neighbour table has room, the
// allowed probes that failed while it was full: the kernel dropped packets
// it could not resolve, which says nothing of the fabric. A probe that now
// gets through counts as slow; one that still fails is a failure.
func recheck(ctx context.Context, rs []check.Result, p check.Prober) []check.Result {
	var idx []int
	var again []check.Probe
	for i, r := range rs {
		if r.Want && !r.Got {
			idx = append(idx, i)
			again = append(again, r.Probe)
		}
	}
	if len(again) == 0 {
		return rs
	}
	// Entries used by the probes turn reclaimable within a minute.
	limit := check.NeighbourTable() / 2
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline) && ctx.Err() == nil; time.Sleep(time.Second) {
		if n, _ := check.NeighbourStats(); n < limit {
			break
		}
	}
	for j, r := range check.Run(ctx, again, p, 4) {
		if r.Got {
			r.Slow = true
			rs[idx[j]] = r
		}
	}
	return rs
}
