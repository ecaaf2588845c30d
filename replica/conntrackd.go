package replica

import (
	"fmt"
	"path/filepath"
	"strings"
)

// ConntrackdGroup is the multicast group and port the replicas' conntrackd
// instances sync on, over the state-sync link.
const (
	ConntrackdGroup = "225.0.0.50"
	ConntrackdPort  = 3780
)

// Conntrackd is the configuration of one replica's conntrackd: FTFW sync
// (acknowledged, resent on loss) over the state-sync link iface, where the
// replica has addr; every entry of the router namespace's table goes to
// the other replicas, which write what they receive straight into their
// own kernel table (no external cache), so a standby that takes over
// already knows every connection, SNAT mapping included. runDir holds the
// instance's lock, socket and log: several instances share a machine in
// the lab. Connections within syncNet (the link's own) are not synced.
func Conntrackd(iface, addr, syncNet, runDir string) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# Written by bothnia: the router replica's connection tracking sync.\n")
	w("Sync {\n")
	// A replica that starts (its node back) asks the others for their
	// whole table: the streams of the replica that serves now.
	w("\tMode FTFW {\n\t\tDisableExternalCache On\n\t\tStartupResync yes\n\t}\n")
	w("\tMulticast {\n")
	w("\t\tIPv4_address %s\n\t\tGroup %d\n\t\tIPv4_interface %s\n\t\tInterface %s\n", ConntrackdGroup, ConntrackdPort, addr, iface)
	w("\t\tSndSocketBuffer 1249280\n\t\tRcvSocketBuffer 1249280\n\t\tChecksum on\n")
	w("\t}\n")
	w("}\n")
	w("General {\n")
	w("\tHashSize 32768\n\tHashLimit 131072\n")
	w("\tLogFile %s\n\tSyslog off\n", filepath.Join(runDir, "conntrackd.log"))
	w("\tLockFile %s\n", filepath.Join(runDir, "conntrackd.lock"))
	w("\tUNIX {\n\t\tPath %s\n\t}\n", filepath.Join(runDir, "conntrackd.ctl"))
	w("\tNetlinkBufferSize 2097152\n\tNetlinkBufferSizeMaxGrowth 8388608\n")
	w("\tNetlinkEventsReliable On\n")
	// The sync link's own traffic and loopback are not the router's.
	w("\tFilter From Userspace {\n\t\tAddress Ignore {\n")
	w("\t\t\tIPv4_address 127.0.0.1\n\t\t\tIPv4_address %s\n\t\t\tIPv4_address %s\n", syncNet, ConntrackdGroup)
	w("\t\t}\n\t}\n")
	w("}\n")
	return b.String()
}
