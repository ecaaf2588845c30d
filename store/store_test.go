package store

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/bothnia/bothnia/spec"
)

func example(t *testing.T) *spec.Spec {
	t.Helper()
	s, err := spec.Load("../examples/knox-epouta.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// StartTest runs an embedded member for one test.
func startTest(t *testing.T) *Server {
	t.Helper()
	dir := t.TempDir()
	srv, err := StartServer(dir, "unix://"+filepath.Join(dir, "etcd.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv
}

func TestSplitAssembleRoundTrip(t *testing.T) {
	roundTrip(t, example(t), Assemble)
}

// roundTrip splits a spec, assembles the objects with assemble and splits
// the result again: the objects must come back the same.
func roundTrip(t *testing.T, s *spec.Spec, assemble func(Objects) (*spec.Spec, []Problem, error)) {
	t.Helper()
	objs, err := Split(s)
	if err != nil {
		t.Fatal(err)
	}
	got, problems, err := assemble(objs)
	if err != nil || len(problems) > 0 {
		t.Fatalf("assemble: %v %v", err, problems)
	}
	again, err := Split(got)
	if err != nil {
		t.Fatal(err)
	}
	if d := Diff(objs, again); len(d) != 0 {
		t.Fatalf("a round trip changed %v", d[0])
	}
}

// One bad port is refused and reported; the rest of the fabric stands.
func TestAssembleRefusesOnePortAlone(t *testing.T) {
	s := example(t)
	objs, _ := Split(s)
	bad := PortKey("mgmt", "knox-vm2")
	objs[bad] = []byte(strings.Replace(string(objs[bad]), "10.101.128.11", "10.101.1.11", 1)) // in ePouta's half, on a Knox node
	objs[PortKey("mgmt", "garbage")] = []byte("name: garbage\nnode: [\n")
	got, problems, err := Assemble(objs)
	if err != nil {
		t.Fatalf("the fabric must still build: %v", err)
	}
	if len(problems) != 2 || problems[0].Key != bad && problems[1].Key != bad {
		t.Fatalf("problems %v, want the bad port and the garbage", problems)
	}
	for _, n := range got.Networks {
		for _, vm := range n.VMs {
			if vm.Name == "knox-vm2" || vm.Name == "garbage" {
				t.Fatalf("%s was kept", vm.Name)
			}
		}
	}
	if got.Network("mgmt") == nil || len(got.Network("mgmt").VMs) != len(s.Network("mgmt").VMs)-1 {
		t.Fatalf("the other ports of mgmt must stay")
	}
	delete(objs, FabricKey)
	if _, _, err := Assemble(objs); err == nil || !strings.Contains(err.Error(), "push a spec first") {
		t.Fatalf("no header: %v", err)
	}
}

// A port whose name breaks the naming rules (issue 16: a new user's
// "vm;rm -rf /", 300 characters, an all-zero MAC) is refused alone, with
// the rule it breaks, as validate refuses it in a spec.
func TestAssembleRefusesBadNames(t *testing.T) {
	s := example(t)
	objs, _ := Split(s)
	good := objs[PortKey("mgmt", "knox-vm2")]
	for name, want := range map[string]string{
		"vm;rm -rf /":            "has ';' at 2; a DNS label has only letters, digits and -",
		strings.Repeat("v", 300): "is 300 characters long",
	} {
		o := Objects{}
		for k, v := range objs {
			o[k] = v
		}
		delete(o, PortKey("mgmt", "knox-vm2"))
		o[PortKey("mgmt", name)] = []byte(strings.Replace(string(good), "name: knox-vm2", "name: "+strconv.Quote(name), 1))
		got, problems, err := Assemble(o)
		if err != nil {
			t.Fatalf("the fabric must still build: %v", err)
		}
		if len(problems) != 1 || !strings.Contains(problems[0].Err.Error(), want) {
			t.Fatalf("problems %v, want the port refused with %q", problems, want)
		}
		if len(got.Network("mgmt").VMs) != len(s.Network("mgmt").VMs)-1 {
			t.Fatalf("%q was kept", name)
		}
	}
	o := Objects{}
	for k, v := range objs {
		o[k] = v
	}
	o[PortKey("mgmt", "knox-vm2")] = []byte(strings.Replace(string(good), "fa:16:3e:80:00:0b", "00:00:00:00:00:00", 1))
	if _, problems, err := Assemble(o); err != nil || len(problems) != 1 || !strings.Contains(problems[0].Err.Error(), "all-zero MAC") {
		t.Fatalf("an all-zero MAC: problems %v, err %v; want the port refused", problems, err)
	}
}

func TestPushThroughEtcd(t *testing.T) {
	srv := startTest(t)
	cli, err := Connect(ClientConfig{Endpoints: []string{srv.ClientURL}})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s := example(t)
	want, _ := Split(s)
	have, rev, err := Load(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	changes := Diff(have, want)
	if len(changes) != len(want) || changes[0].Op != '+' {
		t.Fatalf("first push: %v", changes)
	}
	if _, err := Write(ctx, cli, want, changes, rev); err != nil {
		t.Fatal(err)
	}
	// A push computed from an old read must not overwrite what it missed.
	if _, err := Write(ctx, cli, want, changes, rev); err != ErrConflict {
		t.Fatalf("stale push: %v, want ErrConflict", err)
	}
	have, rev, err = Load(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	if d := Diff(have, want); len(d) != 0 {
		t.Fatalf("second push would change %v", d)
	}
	s.Networks[0].VMs = s.Networks[0].VMs[1:]
	s.Networks[0].VMs[0].IP = "10.101.128.99"
	want2, _ := Split(s)
	changes = Diff(have, want2)
	var lines []string
	for _, c := range changes {
		lines = append(lines, c.String())
	}
	if got := strings.Join(lines, "; "); got != "~ port mgmt/knox-vm2; - port mgmt/knox-vm1" {
		t.Fatalf("changes: %s", got)
	}
	if Summary(changes) != "0 to add, 1 to change, 1 to remove" {
		t.Fatalf("summary %q", Summary(changes))
	}
	if _, err := Write(ctx, cli, want2, changes, rev); err != nil {
		t.Fatal(err)
	}
	have, _, _ = Load(ctx, cli)
	got, problems, err := Assemble(have)
	if err != nil || len(problems) > 0 {
		t.Fatalf("assembled %v %v", err, problems)
	}
	for _, vm := range got.Network("mgmt").VMs {
		if vm.Name == "knox-vm1" || vm.Name == "knox-vm2" && vm.IP != "10.101.128.99" {
			t.Fatalf("after the push: %s %s", vm.Name, vm.IP)
		}
	}
}

// Three members, as between the sites (two at Knox, one at ePouta): one
// lost, the store still takes writes and serves the watch of an agent.
func TestThreeMemberClusterLosesOne(t *testing.T) {
	members, err := StartCluster(t.TempDir(), []string{"knox-1", "knox-2", "epouta-1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, m := range members {
			if m != nil {
				m.Close()
			}
		}
	})
	var eps []string
	for _, m := range members {
		eps = append(eps, m.ClientURL)
	}
	cli, err := Connect(ClientConfig{Endpoints: eps})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w := cli.Watch(ctx, Prefix, clientv3.WithPrefix())
	objs, _ := Split(example(t))
	have, rev, err := Load(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Write(ctx, cli, objs, Diff(have, objs), rev); err != nil {
		t.Fatal(err)
	}
	<-w
	members[2].Close() // ePouta's member: the link is cut
	members[2] = nil
	s := example(t)
	s.Networks[0].VMs = append(s.Networks[0].VMs, &spec.VM{Name: "live", Node: "knox-c1", IP: "10.101.128.77", MAC: "fa:16:3e:80:00:77", SecurityGroups: []string{"mosler"}})
	want, _ := Split(s)
	have, rev, err = Load(ctx, cli)
	if err != nil {
		t.Fatalf("two of three members must still serve reads: %v", err)
	}
	if _, err := Write(ctx, cli, want, Diff(have, want), rev); err != nil {
		t.Fatalf("two of three members must still take writes: %v", err)
	}
	select {
	case resp := <-w:
		if len(resp.Events) != 1 || string(resp.Events[0].Kv.Key) != PortKey("mgmt", "live") {
			t.Fatalf("watch after losing a member: %v", resp.Events)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the watch saw nothing after a member was lost")
	}
}

func TestChangeJSON(t *testing.T) {
	b, err := json.Marshal([]Change{{'+', PortKey("mgmt", "vm1")}, {'-', GroupKey("g")}})
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"op":"+","key":"/bothnia/v1/ports/mgmt/vm1"},{"op":"-","key":"/bothnia/v1/security_groups/g"}]`
	if string(b) != want {
		t.Errorf("got %s, want %s", b, want)
	}
}

// A push of more changes than one etcd transaction may carry goes in a
// chain of guarded transactions, each a usable fabric: an agent watching
// it never sees a port before its group, nor a group removed before the
// ports that named it.
func TestWriteMoreThanOneTransaction(t *testing.T) {
	srv := startTest(t)
	cli, err := Connect(ClientConfig{Endpoints: []string{srv.ClientURL}})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	base := example(t)
	big := example(t)
	big.SecurityGroups = append(big.SecurityGroups, &spec.SecurityGroup{Name: "bulk", NoDefaultEgress: true})
	const n = 3*MaxTxnOps + 7
	for i := 0; i < n; i++ {
		big.Networks[0].VMs = append(big.Networks[0].VMs, &spec.VM{Name: fmt.Sprintf("bulk-%d", i), Node: "knox-c1",
			IP: fmt.Sprintf("10.101.%d.%d", 140+i/250, i%250+1), MAC: fmt.Sprintf("fa:16:3e:90:%02x:%02x", i/256, i%256), SecurityGroups: []string{"bulk"}})
	}
	w := cli.Watch(ctx, Prefix, clientv3.WithPrefix())
	replay := Objects{}
	check := func(step string, s *spec.Spec) {
		t.Helper()
		changes, rev, err := Push(ctx, cli, s, true)
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		// Replay the watch: every transaction's result must assemble
		// without a refused object.
		objs, _, err := Load(ctx, cli)
		if err != nil {
			t.Fatal(err)
		}
		if d := Diff(objs, mustSplit(t, s)); len(d) != 0 {
			t.Fatalf("%s: after the push the store still differs: %v", step, d[0])
		}
		txns := 0
		for txns < (len(changes)+MaxTxnOps-1)/MaxTxnOps {
			resp := <-w
			if resp.Header.Revision > rev {
				t.Fatalf("%s: a transaction beyond the push's revision", step)
			}
			replay = replayEvents(replay, resp.Events)
			if _, problems, err := Assemble(replay); err != nil || len(problems) > 0 {
				t.Fatalf("%s: after transaction %d the fabric does not assemble: %v %v", step, txns+1, err, problems)
			}
			txns++
		}
	}
	check("the first push", base)
	check("adding ports in a new group", big)
	check("removing them and the group", base)
}

func replayEvents(objs Objects, evs []*clientv3.Event) Objects {
	for _, ev := range evs {
		if ev.Type == clientv3.EventTypeDelete {
			delete(objs, string(ev.Kv.Key))
		} else {
			objs[string(ev.Kv.Key)] = ev.Kv.Value
		}
	}
	return objs
}

func mustSplit(t *testing.T, s *spec.Spec) Objects {
	t.Helper()
	o, err := Split(s)
	if err != nil {
		t.Fatal(err)
	}
	return o
}
