// Package wire is what the test host and a guest's agent (guestd) say to
// each other over the guest's serial port: one JSON object per line.
package wire

// Operations.
const (
	OpPing     = "ping"
	OpSh       = "sh"       // run Script with /bin/sh
	OpListen   = "listen"   // check's TCP responders in Namespaces on Ports, kept under Key
	OpUnlisten = "unlisten" // stop the responders kept under Key
	OpTCP      = "tcp"      // check's TCP probe from Namespace to Addr:Port; Out is the source the responder saw
	OpICMP     = "icmp"     // check's echo probe from Namespace to Addr
	OpFrame    = "frame"    // send Frame, a whole Ethernet frame, on Iface in Namespace
)

// Request is one thing for the guest to do.
type Request struct {
	ID         int64    `json:"id"`
	Op         string   `json:"op"`
	Script     string   `json:"script,omitempty"`
	Namespace  string   `json:"ns,omitempty"`
	Namespaces []string `json:"namespaces,omitempty"`
	Addr       string   `json:"addr,omitempty"`
	Port       int      `json:"port,omitempty"`
	Ports      []int    `json:"ports,omitempty"`
	Key        string   `json:"key,omitempty"`
	Iface      string   `json:"iface,omitempty"`
	Frame      []byte   `json:"frame,omitempty"`
	TimeoutMS  int64    `json:"timeout_ms,omitempty"`
}

// Response answers the request of the same ID.
type Response struct {
	ID  int64  `json:"id"`
	RC  int    `json:"rc"`
	Out string `json:"out,omitempty"`
	Err string `json:"err,omitempty"`
}
