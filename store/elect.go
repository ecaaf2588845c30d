package store

import (
	"slices"
	"strings"

	"github.com/bothnia/bothnia/spec"
)

// RouterActiveKey holds the node of the replica that holds a router.
func RouterActiveKey(router string) string { return Prefix + KindRouters + "/" + router + "/active" }

// RouterBeatKey is where the holder of a router beats. It lies outside
// Prefix: agents watch Prefix, and a beat changes nothing they converge.
func RouterBeatKey(router string) string { return "/bothnia/ha/v1/" + router + "/beat" }

// AgentKey reports whether agents, not pushes, write the key: status,
// ports up and router elections.
func AgentKey(k string) bool {
	return strings.HasPrefix(k, Prefix+KindStatus+"/") || strings.HasPrefix(k, Prefix+KindRouters+"/")
}

// activeReplica is the replica an election key names, or spec.NoActive
// when it names none (no key: the last holder's lease ended).
func activeReplica(r *spec.Router, v []byte) string {
	if n := string(v); n != "" && slices.Contains(r.Replicas(), n) {
		return n
	}
	return spec.NoActive
}
