// Package store keeps the fabric in etcd as separate objects, each under
// a key of its own, so that a VM coming or going is one key written and
// one watch event on every agent, and one bad object is refused alone.
//
// Key layout (values are YAML, in the spec's own field names):
//
//	/bothnia/v1/fabric                        the fabric header: fabric, sites (nodes, pools, DHCP),
//	                                          link, router, dns, dhcp_options, firewall, lab
//	/bothnia/v1/networks/<network>            a network without its VMs: name, project, id, segment
//	/bothnia/v1/ports/<network>/<vm>          one VM port: node, ip, mac, port_id, groups, pairs
//	/bothnia/v1/security_groups/<group>       a security group and its rules
//	/bothnia/v1/status/<node>                 written by the node's agent (with a lease):
//	                                          the revision it converged to, ready or not, the last error
//	/bothnia/v1/status/<node>/up/<port id>    written by the node's agent (no lease): the port is up
//	                                          (tap in its bridge, rules in); the value is its tap
//	/bothnia/v1/routers/<router>/active       the replica that holds the router (written by the
//	                                          replicas' agents under the holder's lease; the value
//	                                          is its node). See elect.go
//	/bothnia/ha/v1/<router>/beat              the holder's heartbeat, outside the watched prefix
//
// Assemble turns the objects back into a spec. A port, network or group
// that does not decode, or that validation refuses, is left out and
// reported, and the rest of the fabric still converges.
package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/bothnia/bothnia/internal/parallel"
	"github.com/bothnia/bothnia/spec"
)

// Prefix is where bothnia's keys live.
const Prefix = "/bothnia/v1/"

// Key kinds.
const (
	KindFabric  = "fabric"
	KindNetwork = "networks"
	KindPort    = "ports"
	KindGroup   = "security_groups"
	KindStatus  = "status"
	KindRouters = "routers"
)

// FabricKey and the functions below name the keys of the layout.
const FabricKey = Prefix + KindFabric

func NetworkKey(name string) string     { return Prefix + KindNetwork + "/" + name }
func PortKey(network, vm string) string { return Prefix + KindPort + "/" + network + "/" + vm }
func GroupKey(name string) string       { return Prefix + KindGroup + "/" + name }
func StatusKey(node string) string      { return Prefix + KindStatus + "/" + node }

// PortsUpPrefix is where a node's agent lists the ports that are up;
// PortUpKey one of them (by Neutron port UUID; the value is its tap).
func PortsUpPrefix(node string) string     { return StatusKey(node) + "/up/" }
func PortUpKey(node, portID string) string { return PortsUpPrefix(node) + portID }

// Objects are the store's values by key.
type Objects map[string][]byte

// header is the spec without its networks and groups.
type header struct {
	Fabric      spec.Fabric           `yaml:"fabric"`
	Sites       map[string]*spec.Site `yaml:"sites"`
	Link        spec.Link             `yaml:"link"`
	Router      *spec.Router          `yaml:"router,omitempty"`
	DNS         *spec.DNS             `yaml:"dns,omitempty"`
	DHCPOptions spec.DHCPOptions      `yaml:"dhcp_options,omitempty"`
	Firewall    string                `yaml:"firewall,omitempty"`
	Lab         spec.Lab              `yaml:"lab,omitempty"`
}

// network is a network without its VMs.
type network struct {
	Name    string `yaml:"name"`
	Project string `yaml:"project,omitempty"`
	ID      string `yaml:"id,omitempty"`
	Segment int    `yaml:"segment"`
}

// Split turns a validated spec (defaults applied, as spec.Parse returns
// it) into the store's objects.
func Split(s *spec.Spec) (Objects, error) {
	out := Objects{}
	put := func(key string, v any) error {
		b, err := yaml.Marshal(v)
		if err != nil {
			return fmt.Errorf("store: %s: %w", key, err)
		}
		out[key] = b
		return nil
	}
	h := header{Fabric: s.Fabric, Sites: s.Sites, Link: s.Link, Router: s.Router, DNS: s.DNS, DHCPOptions: s.DHCPOptions, Firewall: s.Firewall, Lab: s.Lab}
	if err := put(FabricKey, h); err != nil {
		return nil, err
	}
	for _, n := range s.Networks {
		if err := put(NetworkKey(n.Name), network{n.Name, n.Project, n.ID, n.Segment}); err != nil {
			return nil, err
		}
		for _, vm := range n.VMs {
			if err := put(PortKey(n.Name, vm.Name), vm); err != nil {
				return nil, err
			}
		}
	}
	for _, g := range s.SecurityGroups {
		if err := put(GroupKey(g.Name), g); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Problem is an object Assemble left out, and why.
type Problem struct {
	Key string
	Err error
}

func (p Problem) String() string { return p.Key + ": " + p.Err.Error() }

// Assemble builds the spec the objects describe. Objects that cannot be
// used are left out and returned as problems; the error is for a fabric
// that cannot be built at all (no header, or one validation refuses).
func Assemble(objs Objects) (*spec.Spec, []Problem, error) {
	return new(Assembler).Assemble(objs)
}

// An Assembler assembles the same store again and again, as an agent
// does on every change: it keeps each object's decoding and decodes again
// only the objects whose bytes changed, so a change of one port among
// ten thousand costs one decoding, not ten thousand. The zero value is
// ready; not safe for concurrent use.
type Assembler struct {
	decoded map[string]decoded
}

type decoded struct {
	raw []byte
	v   any // *network, *spec.VM or *spec.SecurityGroup
	err error
}

func decodeObject(kind string, raw []byte) decoded {
	var v any
	switch kind {
	case KindNetwork:
		v = &network{}
	case KindPort:
		v = &spec.VM{}
	default:
		v = &spec.SecurityGroup{}
	}
	return decoded{raw, v, strictYAML(raw, v)}
}

// kindOf is the kind a key names ("" for a key outside the layout).
func kindOf(key string) string {
	rest, ok := strings.CutPrefix(key, Prefix)
	if !ok {
		return ""
	}
	kind, _, _ := strings.Cut(rest, "/")
	return kind
}

// decodeAll returns the decoding of every network, port and group: the
// last call's where the bytes are the same, else a new one, made on every
// CPU when there are many (a starting agent decodes the whole store,
// about 40 µs a port).
func (a *Assembler) decodeAll(objs Objects) map[string]decoded {
	all := make(map[string]decoded, len(objs))
	var keys []string
	for k, raw := range objs {
		switch kindOf(k) {
		case KindNetwork, KindPort, KindGroup:
		default:
			continue
		}
		if d, ok := a.decoded[k]; ok && bytes.Equal(d.raw, raw) {
			all[k] = d
		} else {
			keys = append(keys, k)
		}
	}
	out := make([]decoded, len(keys))
	parallel.For(len(keys), func(i int) { out[i] = decodeObject(kindOf(keys[i]), objs[keys[i]]) })
	for i, k := range keys {
		all[k] = out[i]
	}
	return all
}

// Assemble is the package's Assemble, decoding only what changed since
// the last call.
func (a *Assembler) Assemble(objs Objects) (*spec.Spec, []Problem, error) {
	a.decoded = a.decodeAll(objs)
	var problems []Problem
	hb, ok := objs[FabricKey]
	if !ok {
		return nil, nil, fmt.Errorf("store: no fabric at %s; push a spec first (bothnia push SPEC)", FabricKey)
	}
	var h header
	if err := strictYAML(hb, &h); err != nil {
		return nil, nil, fmt.Errorf("store: %s: %w", FabricKey, err)
	}
	nets := map[string]*spec.Network{}
	groups := map[string]*spec.SecurityGroup{}
	type portObj struct {
		key string
		net string
		vm  *spec.VM
	}
	var ports []portObj
	for _, k := range slices.Sorted(maps.Keys(objs)) {
		rest, ok := strings.CutPrefix(k, Prefix)
		if !ok {
			continue
		}
		kind, name, _ := strings.Cut(rest, "/")
		var err error
		switch kind {
		case KindNetwork:
			d := a.decoded[k]
			err = d.err
			n := d.v.(*network)
			if err == nil && n.Name != name {
				err = fmt.Errorf("its name %q is not its key's %q", n.Name, name)
			}
			if err == nil {
				nets[name] = &spec.Network{Name: n.Name, Project: n.Project, ID: n.ID, Segment: n.Segment}
			}
		case KindPort:
			netName, vmName, _ := strings.Cut(name, "/")
			d := a.decoded[k]
			err = d.err
			// A copy: validation fills in defaults, and the decoding is
			// kept for the next call.
			vm := new(spec.VM)
			*vm = *d.v.(*spec.VM)
			if err == nil && vm.Name != vmName {
				err = fmt.Errorf("its name %q is not its key's %q", vm.Name, vmName)
			}
			if err == nil {
				ports = append(ports, portObj{k, netName, vm})
			}
		case KindGroup:
			d := a.decoded[k]
			err = d.err
			g := new(spec.SecurityGroup)
			*g = *d.v.(*spec.SecurityGroup)
			if err == nil && g.Name != name {
				err = fmt.Errorf("its name %q is not its key's %q", g.Name, name)
			}
			if err == nil {
				groups[name] = g
			}
		}
		if err != nil {
			problems = append(problems, Problem{k, err})
		}
	}
	if r := h.Router; r != nil && r.Replicated() {
		r.Active = activeReplica(r, objs[RouterActiveKey(r.Name)])
	}
	refused := map[string]bool{} // port keys left out by validation
	for {
		s := &spec.Spec{Fabric: h.Fabric, Sites: h.Sites, Link: h.Link, Router: h.Router, DNS: h.DNS, DHCPOptions: h.DHCPOptions, Firewall: h.Firewall, Lab: h.Lab}
		for _, g := range slices.Sorted(maps.Keys(groups)) {
			s.SecurityGroups = append(s.SecurityGroups, groups[g])
		}
		portKeys := map[string]string{} // "networks[i].vms[j]" -> key
		for _, nn := range slices.Sorted(maps.Keys(nets)) {
			n := *nets[nn]
			n.VMs = nil
			for _, p := range ports {
				if p.net == nn && !refused[p.key] {
					portKeys[fmt.Sprintf("networks[%d].vms[%d]", len(s.Networks), len(n.VMs))] = p.key
					n.VMs = append(n.VMs, p.vm)
				}
			}
			s.Networks = append(s.Networks, &n)
		}
		for _, p := range ports {
			if nets[p.net] == nil && !refused[p.key] {
				refused[p.key] = true
				problems = append(problems, Problem{p.key, fmt.Errorf("no network %q in the store", p.net)})
			}
		}
		err := s.Validate()
		if err == nil {
			return s, problems, nil
		}
		// Leave out the ports validation names, and try again; an error
		// that names no port is the fabric's.
		blamed := map[string][]string{}
		var other []error
		for _, e := range unjoin(err) {
			var se *spec.Error
			if errors.As(e, &se) {
				if m := portField.FindString(se.Field); m != "" && portKeys[m] != "" {
					blamed[portKeys[m]] = append(blamed[portKeys[m]], se.Field+": "+se.Msg)
					continue
				}
			}
			other = append(other, e)
		}
		if len(blamed) == 0 {
			return nil, problems, errors.Join(other...)
		}
		for _, k := range slices.Sorted(maps.Keys(blamed)) {
			refused[k] = true
			problems = append(problems, Problem{k, errors.New(strings.Join(blamed[k], "; "))})
		}
	}
}

var portField = regexp.MustCompile(`^networks\[\d+\]\.vms\[\d+\]`)

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func strictYAML(b []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	return dec.Decode(v)
}

// Change is one object a push adds, changes or removes.
type Change struct {
	Op  byte // '+', '~', '-'
	Key string
}

// MarshalJSON writes the operation as the character it is.
func (c Change) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Op  string `json:"op"`
		Key string `json:"key"`
	}{string(c.Op), c.Key})
}

func (c Change) String() string {
	rest := strings.TrimPrefix(c.Key, Prefix)
	kind, name, _ := strings.Cut(rest, "/")
	if name == "" {
		return fmt.Sprintf("%c %s", c.Op, kind)
	}
	return fmt.Sprintf("%c %s %s", c.Op, strings.TrimSuffix(kind, "s"), name)
}

// Diff lists what turns have into want, sorted by key. Status and
// election keys are the agents', never a push's.
func Diff(have, want Objects) []Change {
	var out []Change
	for _, k := range slices.Sorted(maps.Keys(want)) {
		old, ok := have[k]
		switch {
		case !ok:
			out = append(out, Change{'+', k})
		case !bytes.Equal(old, want[k]):
			out = append(out, Change{'~', k})
		}
	}
	for _, k := range slices.Sorted(maps.Keys(have)) {
		if _, ok := want[k]; !ok && !AgentKey(k) {
			out = append(out, Change{'-', k})
		}
	}
	return out
}

// Summary counts changes by operation, as "2 to add, 1 to change, 0 to remove".
func Summary(cs []Change) string {
	n := map[byte]int{}
	for _, c := range cs {
		n[c.Op]++
	}
	return strconv.Itoa(n['+']) + " to add, " + strconv.Itoa(n['~']) + " to change, " + strconv.Itoa(n['-']) + " to remove"
}
