package lab

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"go.yaml.in/yaml/v3"
	"golang.org/x/sys/unix"

	"github.com/bothnia/bothnia/internal/packetsock"
	"github.com/bothnia/bothnia/namespace"
	"github.com/bothnia/bothnia/openstack"
	"github.com/bothnia/bothnia/spec"
)

// Issue 17: openstack sync against ePouta's real Neutron and its real
// linuxbridge agent (Zed), with real packets through the agent's own
// iptables rules. By prefixes, ePouta's mosler admits exactly Knox's
// members of mosler: a member reaches epouta-vm1 on tcp 7000; a Knox VM
// on the next address that is not a member, a VM of the other project,
// and a forged source on the link do not; a member taken out of the
// group is refused in the next round. By address groups, Zed's agent
// renders the mirror with no source match at all: every source is
// admitted, which is why sync refuses that mechanism unless told the
// cloud enforces it.
func TestSyncAdmitsExactlyTheMembers(t *testing.T) {
	s, raw := exampleSpec(t, func(raw []byte) []byte {
		// knox-vm3: in mgmt but not in mosler, on the address after the
		// members' 10.101.128.10 and .11.
		return bytes.Replace(raw, []byte("      - {name: epouta-vm1,"),
			[]byte("      - {name: knox-vm3, node: knox-c1, ip: 10.101.128.12, mac: \"fa:16:3e:80:00:0c\", security_groups: [default]}\n      - {name: epouta-vm1,"), 1)
	})
	l := newLab(t, s, raw)
	if l.ForeignMode() != ForeignNeutron {
		t.Fatalf("the lab runs ePouta as %q, want real Neutron", l.ForeignMode())
	}
	startSink(t, l.VMNS("epouta-vm1"), 7000)
	const target = "10.101.0.10:7000"
	reaches := func(from string) bool {
		c, err := dialFrom(l.VMNS(from), target, 1500*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	}
	// until polls: the agent applies a rule change within its polling
	// interval (2 s here) of Neutron's notice.
	until := func(want bool, from string) bool {
		for i := 0; i < 20; i++ {
			if reaches(from) == want {
				return true
			}
			time.Sleep(500 * time.Millisecond)
		}
		return false
	}
	agentRules := func() []string {
		out, err := exec.Command("ip", "netns", "exec", l.NodeNS("epouta-c1"), "iptables-save", "-t", "filter").CombinedOutput()
		if err != nil {
			t.Fatalf("iptables-save on epouta-c1: %v: %s", err, out)
		}
		var rs []string
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "-A neutron-linuxbri-i") && strings.Contains(line, "--dport 7000") && strings.HasSuffix(line, "-j RETURN") {
				rs = append(rs, line)
			}
		}
		return rs
	}
	open := func(rs []string) []string {
		var out []string
		for _, r := range rs {
			if !strings.Contains(r, " -s ") && !strings.Contains(r, "--match-set") {
				out = append(out, r)
			}
		}
		return out
	}

	t.Run("prefixes", func(t *testing.T) {
		if !until(true, "knox-vm1") {
			t.Error("knox-vm1, a Knox member of mosler, cannot reach epouta-vm1 on tcp 7000")
		}
		if reaches("knox-vm3") {
			t.Error("knox-vm3, in mgmt but not in mosler, reached epouta-vm1 on tcp 7000")
		}
		if reaches("sandbox-vm1") {
			t.Error("sandbox-vm1, of the other project, reached epouta-vm1 on tcp 7000")
		}
		if forgedArrives(t, l, "10.101.128.77") {
			t.Error("a SYN forged on the link from 10.101.128.77, no member's address, reached epouta-vm1")
		}
		// The control: the same SYN from a member's address is admitted.
		// Neutron trusts a source address as bothnia's rules do; what
		// keeps a Knox VM from sending another's is Knox's anti-spoofing,
		// and the link itself must carry only the sites' traffic.
		if !forgedArrives(t, l, "10.101.128.10") {
			t.Error("a SYN on the link from the member address 10.101.128.10 did not reach epouta-vm1: the forged-source case proves nothing")
		}
		rs := agentRules()
		if len(rs) == 0 {
			t.Fatal("the agent has no rule for tcp 7000")
		}
		if o := open(rs); len(o) > 0 {
			t.Errorf("the agent admits tcp 7000 from any source:\n%s", strings.Join(o, "\n"))
		}
		if !strings.Contains(strings.Join(rs, "\n"), "-s 10.101.128.10/31") {
			t.Errorf("no mirror of Knox's members 10.101.128.10/31 in the agent's rules:\n%s", strings.Join(rs, "\n"))
		}
	})

	t.Run("address groups on Zed", func(t *testing.T) {
		ctx := context.Background()
		cur, err := l.Spec()
		if err != nil {
			t.Fatal(err)
		}
		clouds, err := l.foreignClouds(ctx, cur)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := openstack.SyncSites(ctx, cur, clouds, openstack.ByAddressGroups); err != nil {
			t.Fatal(err)
		}
		// Zed's iptables driver renders the rule with no source match.
		var o []string
		for i := 0; i < 20 && len(o) == 0; i++ {
			o = open(agentRules())
			time.Sleep(500 * time.Millisecond)
		}
		if len(o) == 0 {
			t.Fatal("with the address-group mirror, the agent rendered no open rule: has Zed's driver learnt address groups?")
		}
		if !until(true, "knox-vm3") {
			t.Error("with Zed ignoring the address group, knox-vm3 (no member) should get through: the hazard this test documents")
		}
		// Back to prefixes: closed again.
		if _, err := openstack.SyncSites(ctx, cur, clouds, openstack.ByPrefixes); err != nil {
			t.Fatal(err)
		}
		if !until(false, "knox-vm3") {
			t.Error("after switching back to prefixes, knox-vm3 still reaches epouta-vm1")
		}
		if o := open(agentRules()); len(o) > 0 {
			t.Errorf("after switching back, the agent still admits any source:\n%s", strings.Join(o, "\n"))
		}
	})

	t.Run("revoked", func(t *testing.T) {
		cur, err := l.Spec()
		if err != nil {
			t.Fatal(err)
		}
		vm, _ := cur.VM("knox-vm1")
		vm.SecurityGroups = []string{"default"}
		b, err := yamlOf(cur)
		if err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		if _, err := l.Up(cur, b); err != nil { // one round of sync, as the lab runs it
			t.Fatal(err)
		}
		if !until(false, "knox-vm1") {
			t.Fatal("knox-vm1, out of mosler, still opens connections to epouta-vm1 on tcp 7000")
		}
		t.Logf("knox-vm1 out of mosler -> refused by ePouta's agent: %s", time.Since(t0).Round(10*time.Millisecond))
		if !until(true, "knox-vm2") {
			t.Error("knox-vm2, still a member, lost its access")
		}
	})
}

func yamlOf(s *spec.Spec) ([]byte, error) { return yaml.Marshal(s) }

// forgedArrives sends a TCP SYN for epouta-vm1:7000 from src, as a host
// on the link would (a namespace plugged into epouta-c1's stand-in for the
// VLAN), and reports whether epouta-vm1's eth0 sees it.
func forgedArrives(t *testing.T, l *Lab, src string) bool {
	t.Helper()
	wire := l.All() + "wire"
	if !namespace.Exists(wire) {
		if _, err := namespace.Create(wire); err != nil {
			t.Fatal(err)
		}
		node := l.NodeNS("epouta-c1")
		for _, args := range [][]string{
			{"-n", node, "link", "add", "wire0", "type", "veth", "peer", "name", "eth0", "netns", wire},
			{"-n", node, "link", "set", "wire0", "master", trunkBridge(1203), "up"},
			{"-n", wire, "link", "set", "eth0", "address", "02:00:00:00:77:77", "up"},
		} {
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				t.Fatalf("ip %v: %v: %s", args, err, out)
			}
		}
	}
	vm, _ := mustSpec(t, l).VM("epouta-vm1")
	dst, _ := net.ParseMAC(vm.MAC)
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0x77, 0x77}, DstMAC: dst, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: net.ParseIP(src).To4(), DstIP: net.ParseIP(vm.IP).To4()}
	tcp := &layers.TCP{SrcPort: 41777, DstPort: 7000, SYN: true, Seq: 1, Window: 64240}
	_ = tcp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, tcp); err != nil {
		t.Fatal(err)
	}
	seen := make(chan bool, 1)
	sniff, _, err := packetsock.Open(l.VMNS("epouta-vm1"), "eth0", unix.ETH_P_ALL, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer unix.Close(sniff)
		b := make([]byte, 2048)
		for deadline := time.Now().Add(1500 * time.Millisecond); time.Now().Before(deadline); {
			n, _, err := unix.Recvfrom(sniff, b, 0)
			if err != nil || n < 14+20+4 || binary.BigEndian.Uint16(b[12:]) != 0x0800 {
				continue
			}
			if net.IP(b[26:30]).Equal(net.ParseIP(src)) && binary.BigEndian.Uint16(b[14+20+2:]) == 7000 {
				seen <- true
				return
			}
		}
		seen <- false
	}()
	for i := 0; i < 3; i++ {
		if err := packetsock.Send(wire, "eth0", buf.Bytes()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return <-seen
}

func mustSpec(t *testing.T, l *Lab) *spec.Spec {
	s, err := l.Spec()
	if err != nil {
		t.Fatal(err)
	}
	return s
}
