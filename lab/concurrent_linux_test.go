package lab

import (
	"fmt"
	"sync"
	"testing"
)

// concYAML is liveYAML with a DHCP server at each site, so that a VM
// added live takes its address by DHCP.
const concYAML = `
fabric: {name: conc, cidr: 10.101.0.0/16}
sites:
  epouta:
    cidr: 10.101.0.0/17
    pools: [10.101.0.4-10.101.127.255]
    dhcp: {address: 10.101.0.3, node: epouta-c1}
    nodes: [{name: epouta-c1, role: compute, underlay: 172.30.0.2}]
  knox:
    cidr: 10.101.128.0/17
    pools: [10.101.128.1-10.101.255.254]
    dhcp: {address: 10.101.128.0, node: knox-c1}
    nodes: [{name: knox-c1, role: compute, underlay: 172.30.0.1}]
link: {mode: vxlan}
networks:
  - name: mgmt
    segment: 300
    vms:
      - {name: k1, node: knox-c1, ip: 10.101.128.10, mac: "fa:16:3e:80:00:0a"}
`

// Twelve "lab vm add" at once (issue 16: they once left one VM in the
// store and none with an address) all land, with distinct addresses and
// leases; each is a handle of its own, as a separate command would be.
func TestTwelveConcurrentVMAdds(t *testing.T) {
	l, _ := newAgentLab(t, concYAML)
	const n = 12
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			h, err := New(l.Prefix)
			if err != nil {
				errs[i] = err
				return
			}
			node := "knox-c1"
			if i%2 == 1 {
				node = "epouta-c1"
			}
			_, errs[i] = h.AddVM(NewVM{Name: fmt.Sprintf("c%d", i), Network: "mgmt", Node: node})
		}(i)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("vm add c%d: %v", i, err)
		}
	}
	s, err := l.Spec()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("c%d", i)
		vm, _ := s.VM(name)
		if vm == nil {
			t.Errorf("%s is not in the lab's spec", name)
			continue
		}
		if other, ok := seen[vm.IP]; ok {
			t.Errorf("%s and %s both have %s", name, other, vm.IP)
		}
		seen[vm.IP] = name
		if !l.hasAddr(name, vm.IP+"/16") {
			t.Errorf("%s has no lease of %s on its eth0", name, vm.IP)
		}
	}
}
