package firewall

import "strings"

// Drop reasons, as `show counters` and the agent's metrics name them.
const (
	DropSpoofedSource = "spoofed-source"
	DropSpoofedARP    = "spoofed-arp"
	DropRogueDHCP     = "rogue-dhcp"
	DropRogueRA       = "rogue-ra"
	DropTagged        = "tagged-frame"
	DropInvalid       = "invalid"
	DropGroupDeny     = "group-deny"
)

// DropReasons lists every reason, in the order operators read them.
var DropReasons = []string{DropSpoofedSource, DropSpoofedARP, DropRogueDHCP, DropRogueRA, DropTagged, DropInvalid, DropGroupDeny}

// dropReason names what a counting drop rule of the nftables rendering
// drops, from its table, chain and text; "" for other rules.
func dropReason(table, chain, text string) string {
	if !strings.HasSuffix(text, "counter drop") {
		return ""
	}
	switch {
	case strings.Contains(text, "ether type 0x88a8"), strings.Contains(text, "ether type 0x8100"):
		return DropTagged
	case strings.Contains(text, "udp sport 67 udp dport 68"), strings.Contains(text, "udp sport 547 udp dport 546"):
		return DropRogueDHCP
	case strings.Contains(text, "icmpv6 type 134"):
		return DropRogueRA
	case strings.Contains(text, "ct state invalid"), strings.Contains(text, "tcp flags"):
		return DropInvalid
	case table == L2Table && chain == "prerouting" && text == "meta protocol arp counter drop":
		return DropSpoofedARP
	case table == L2Table && chain == "prerouting" && text == "counter drop":
		return DropSpoofedSource
	case table == FWTable && text == "counter drop":
		return DropGroupDeny
	}
	return ""
}

// Counter is what one drop reason has dropped.
type Counter struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}
