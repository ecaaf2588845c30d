package store

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/bothnia/bothnia/spec"
)

// An Assembler fed one change after another must build exactly what a
// fresh Assemble builds from the same objects: its kept decodings are an
// optimisation, never a source of stale or shared state.
func TestAssemblerMatchesAFreshAssemble(t *testing.T) {
	objs, err := Split(example(t))
	if err != nil {
		t.Fatal(err)
	}
	vm2 := PortKey("mgmt", "knox-vm2")
	good := objs[vm2]
	steps := []struct {
		name string
		edit func(Objects)
	}{
		{"unchanged", func(Objects) {}},
		{"a port's address changed", func(o Objects) {
			o[vm2] = []byte(strings.Replace(string(good), "10.101.128.11", "10.101.128.99", 1))
		}},
		{"a port made invalid", func(o Objects) {
			o[vm2] = []byte(strings.Replace(string(good), "10.101.128.11", "10.101.1.11", 1))
		}},
		{"garbage added", func(o Objects) { o[PortKey("mgmt", "garbage")] = []byte("name: garbage\nnode: [\n") }},
		{"the port fixed, garbage removed", func(o Objects) {
			o[vm2] = good
			delete(o, PortKey("mgmt", "garbage"))
		}},
		{"a port removed", func(o Objects) { delete(o, vm2) }},
		{"the port back", func(o Objects) { o[vm2] = append([]byte(nil), good...) }},
	}
	var a Assembler
	for _, st := range steps {
		st.edit(objs)
		got, gotProblems, gotErr := a.Assemble(objs)
		want, wantProblems, wantErr := Assemble(objs)
		if (gotErr == nil) != (wantErr == nil) || !reflect.DeepEqual(gotProblems, wantProblems) {
			t.Fatalf("%s: problems %v, %v; a fresh assemble: %v, %v", st.name, gotProblems, gotErr, wantProblems, wantErr)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: the assembler built a different spec than a fresh assemble", st.name)
		}
		if len(a.decoded) != len(objs)-1 { // all but the header
			t.Fatalf("%s: %d decodings kept for %d objects", st.name, len(a.decoded), len(objs)-1)
		}
	}
}

// Enough ports to be decoded on every CPU: the round trip still holds.
func TestAssembleDecodesManyPortsInParallel(t *testing.T) {
	s := example(t)
	for i := 0; i < 2000; i++ {
		s.Networks[0].VMs = append(s.Networks[0].VMs, &spec.VM{Name: fmt.Sprintf("many-%d", i), Node: "knox-c1",
			IP: fmt.Sprintf("10.101.%d.%d", 140+i/250, i%250+1), MAC: fmt.Sprintf("fa:16:3e:90:%02x:%02x", i/256, i%256), SecurityGroups: []string{"mosler"}})
	}
	var a Assembler
	roundTrip(t, s, a.Assemble)
}
