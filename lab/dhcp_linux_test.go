package lab

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/bothnia/bothnia/namespace"
	"github.com/bothnia/bothnia/plan"
	"github.com/bothnia/bothnia/spec"
)

func logHas(t *testing.T, path string, parts ...string) bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		all := true
		for _, p := range parts {
			if !strings.Contains(line, p) {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

// Real busybox udhcpc clients against both sites' servers.
func TestDHCPRealClients(t *testing.T) {
	s, err := spec.Parse([]byte(twoNodes))
	if err != nil {
		t.Fatal(err)
	}
	l := newLab(t, s, []byte(twoNodes))
	mustCheck(t, l, s) // leases: right address, options and server, per site

	knoxLog, epLog := l.ServiceLog("dhcp-knox"), l.ServiceLog("dhcp-epouta")
	// Each site's server leased its own VM and stayed silent for the other's.
	if !logHas(t, knoxLog, "msg=lease", "mac=fa:16:3e:80:00:0a") || logHas(t, knoxLog, "msg=lease", "mac=fa:16:3e:00:00:0a") {
		t.Error("knox's server must lease k1 and only k1")
	}
	if !logHas(t, epLog, "msg=lease", "mac=fa:16:3e:00:00:0a") || logHas(t, epLog, "msg=lease", "mac=fa:16:3e:80:00:0a") {
		t.Error("epouta's server must lease e1 and only e1")
	}
	if !logHas(t, knoxLog, "reason=other-site", "mac=fa:16:3e:00:00:0a") {
		t.Error("knox's server did not see (and ignore) e1's requests")
	}

	t.Run("unknown MAC gets nothing", func(t *testing.T) {
		e := newEnsurer()
		defer e.close()
		ns := l.Prefix + "-stranger"
		t.Cleanup(func() { _ = namespace.Delete(ns) })
		ls, _ := LabSpec(s)
		br := plan.BridgeName(plan.NetworkID(ls, ls.Network("mgmt")))
		// Not named tap…: a tap the firewall does not know passes nothing
		// (fail closed), and here the servers must see the stranger.
		for _, f := range []func() error{
			func() error { return e.netns(ns) },
			func() error { return e.veth(ns, VMDev, l.NodeNS("knox-ctl"), "strngr0", 0, "02:00:00:00:00:99") },
			func() error { return e.master(l.NodeNS("knox-ctl"), "strngr0", br) },
			func() error { return e.up(l.NodeNS("knox-ctl"), "strngr0") },
			func() error { return e.up(ns, VMDev) },
		} {
			if err := f(); err != nil {
				t.Fatal(err)
			}
		}
		if err := l.waitReady(3 * time.Second); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("udhcpc", "-i", VMDev, "-f", "-q", "-n", "-t", "3", "-T", "1", "-s", "/bin/true")
		if err := namespace.Do(ns, cmd.Start); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err == nil {
			t.Fatal("a MAC the spec does not know got a lease")
		}
		if !logHas(t, knoxLog, "reason=unknown", "mac=02:00:00:00:00:99") || !logHas(t, epLog, "reason=unknown", "mac=02:00:00:00:00:99") {
			t.Error("both servers must have seen and ignored the stranger")
		}
	})

	t.Run("request for a wrong address is NAKed", func(t *testing.T) {
		mac, _ := net.ParseMAC("fa:16:3e:80:00:0a")
		req, err := dhcpv4.New(dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
			dhcpv4.WithBroadcast(true), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.101.128.77"))))
		if err != nil {
			t.Fatal(err)
		}
		var conn *net.UDPConn
		err = namespace.Do(l.VMNS("k1"), func() error {
			var err error
			conn, err = net.ListenUDP("udp4", &net.UDPAddr{Port: 68})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// A broadcast from the VM's own address: anti-spoofing lets it out.
		if err := setBroadcast(conn); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.WriteToUDP(req.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: 67}); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 1500)
		for {
			n, _, err := conn.ReadFromUDP(buf)
			if err != nil {
				t.Fatalf("no answer to a wrong-address request: %v", err)
			}
			resp, err := dhcpv4.FromBytes(buf[:n])
			if err != nil || resp.TransactionID != req.TransactionID {
				continue
			}
			if resp.MessageType() != dhcpv4.MessageTypeNak || !resp.ServerIdentifier().Equal(net.ParseIP("10.101.128.0")) {
				t.Fatalf("want a NAK from knox's server, got %s", resp.Summary())
			}
			return
		}
	})

	t.Run("renew and release", func(t *testing.T) {
		lease := l.LeaseFile("k1")
		_ = os.Remove(lease)
		cmd := exec.Command("udhcpc", "-i", VMDev, "-f", "-t", "5", "-T", "1", "-s", l.stateDir()+"/udhcpc.script", "-O", "mtu")
		cmd.Env = append(os.Environ(), "LEASE_FILE="+lease)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := namespace.Do(l.VMNS("k1"), cmd.Start); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
		leaseEvent := func(ev string) func() bool {
			return func() bool {
				b, _ := os.ReadFile(lease)
				return strings.Contains(string(b), "event="+ev)
			}
		}
		waitFor(t, 5*time.Second, "bound", leaseEvent("bound"))
		_ = cmd.Process.Signal(syscall.SIGUSR1) // renew now
		waitFor(t, 5*time.Second, "renew", leaseEvent("renew"))
		_ = cmd.Process.Signal(syscall.SIGUSR2) // release
		waitFor(t, 5*time.Second, "release in the server's log", func() bool { return logHas(t, knoxLog, "msg=release", "mac=fa:16:3e:80:00:0a") })
		if b, _ := os.ReadFile(lease); !strings.Contains(string(b), "ip=10.101.128.10") {
			t.Errorf("renewed lease: %s", b)
		}
	})

}

func setBroadcast(c *net.UDPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_BROADCAST, 1) })
	if err != nil {
		return err
	}
	return serr
}
