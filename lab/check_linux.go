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
	var eps []check.Endpoint
	for _, ep := range Endpoints(s) {
		eps = append(eps, check.Endpoint{Name: ep.Name, Addr: ep.Addr, Allowed: ep.Allowed})
	}
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
	return check.Run(ctx, probes, p, 16, check.NewPacer(check.NeighbourPairs(), check.NeighbourWindow)), nil
}
