package namespace

import (
	"net"
	"os"
	"testing"

	"github.com/vishvananda/netns"

	"github.com/bothnia/bothnia/internal/kerneltest"
)

func TestCreateDoDelete(t *testing.T) {
	kerneltest.RequireRoot(t)
	name := kerneltest.Prefix(t) + "-ns"
	t.Cleanup(func() { _ = Delete(name) })
	before, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()
	if made, err := Create(name); err != nil || !made {
		t.Fatalf("create: %v %v", made, err)
	}
	if made, err := Create(name); err != nil || made {
		t.Fatalf("a second create must be a no-op: %v %v", made, err)
	}
	var ifaces []net.Interface
	if err := Do(name, func() error {
		var err error
		ifaces, err = net.Interfaces()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(ifaces) != 1 || ifaces[0].Name != "lo" {
		t.Fatalf("a new namespace has only lo, got %v", ifaces)
	}
	after, _ := netns.Get()
	defer after.Close()
	if !before.Equal(after) {
		t.Fatal("Do left the thread in another namespace")
	}
	if v, err := Sysctl(name, "net.ipv4.ip_forward"); err != nil || v != "0" {
		t.Fatalf("ip_forward in a new namespace: %q %v", v, err)
	}
	if got, _ := List(name); len(got) != 1 {
		t.Fatalf("list %v", got)
	}
	if err := Delete(name); err != nil || Exists(name) {
		t.Fatalf("delete: %v, still there: %v", err, Exists(name))
	}
	if _, err := os.Stat(Dir + "/" + name); !os.IsNotExist(err) {
		t.Fatal("the bind mount file is left")
	}
}
