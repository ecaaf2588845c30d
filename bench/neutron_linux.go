package bench

import (
	"bufio"
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/bothnia/bothnia/namespace"
)

// neutronFW drives Neutron's own IptablesFirewallDriver: the peer a
// linuxbridge site runs today.
//
//go:embed peers/neutron_fw.py
var neutronFW []byte

type neutronResult struct{ initial, add time.Duration }

// runNeutron runs Neutron's driver for each size up to max, in a namespace
// of its own, and returns its times. Its output is checked line by line:
// a size it did not report is an error, not a missing column. Debian's
// python3 (where python3-neutron installs), not whatever is first in PATH.
func runNeutron(prefix string, sizes []int, max int) (map[int]neutronResult, error) {
	if err := exec.Command("/usr/bin/python3", "-c", "import neutron.agent.linux.iptables_firewall").Run(); err != nil {
		return nil, fmt.Errorf("bench: Neutron's firewall driver is not importable (install python3-neutron, or pass --neutron-max 0): %w", err)
	}
	var run []string
	for _, n := range sizes {
		if n <= max {
			run = append(run, strconv.Itoa(n))
		}
	}
	if len(run) == 0 {
		return nil, nil
	}
	dir, err := os.MkdirTemp("", "bothnia-neutron-fw-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	script := filepath.Join(dir, "neutron_fw.py")
	if err := os.WriteFile(script, neutronFW, 0o644); err != nil {
		return nil, err
	}
	var out []byte
	for _, n := range run {
		// A namespace per size, deleted afterwards: each size starts from
		// an empty ruleset, and no teardown is timed or waited for.
		ns := prefix + "-neutron"
		namespace.Delete(ns) // one a killed run left
		if _, err := namespace.Create(ns); err != nil {
			return nil, err
		}
		o, err := exec.Command("ip", "netns", "exec", ns, "/usr/bin/python3", script, n, "--keep").CombinedOutput()
		namespace.Delete(ns)
		out = append(out, o...)
		if err != nil {
			return nil, fmt.Errorf("bench: Neutron's driver at %s ports: %v\n%s", n, err, o)
		}
	}
	res := map[int]neutronResult{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 || (f[0] != "initial" && f[0] != "add1") {
			continue
		}
		n, err1 := strconv.Atoi(f[1])
		sec, err2 := strconv.ParseFloat(f[2], 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("bench: Neutron's driver printed %q", sc.Text())
		}
		r := res[n]
		d := time.Duration(sec * float64(time.Second))
		if f[0] == "initial" {
			r.initial = d
		} else {
			r.add = d
		}
		res[n] = r
	}
	for _, s := range run {
		n, _ := strconv.Atoi(s)
		if r := res[n]; r.initial == 0 || r.add == 0 {
			return nil, fmt.Errorf("bench: Neutron's driver reported nothing for %d ports:\n%s", n, out)
		}
	}
	return res, nil
}
