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
	// A neighbour solicitation or advertisement a port may not send
	// (another port's target, a foreign link-layer option).
	DropSpoofedND = "spoofed-nd"
	// A tap on one of bothnia's bridges that has no rules yet.
	DropUnprogrammed = "unprogrammed-port"
	// A packet the node would route from or into one of its bridges.
	DropRouted = "routed"
)

// DropReasons lists every reason, in the order operators read them.
var DropReasons = []string{DropSpoofedSource, DropSpoofedARP, DropSpoofedND, DropRogueDHCP, DropRogueRA, DropTagged,
	DropInvalid, DropUnprogrammed, DropRouted, DropGroupDeny}

// dropReason names what a counting drop rule of the nftables rendering
// drops, from its table, chain and text; "" for other rules.
func dropReason(table, chain, text string) string {
	if !strings.HasSuffix(text, "counter drop") {
		return ""
	}
	switch {
	case strings.Contains(text, "ether type 0x88a8"), strings.Contains(text, "ether type 0x8100"):
		return DropTagged
	case strings.Contains(text, "udp dport 68 counter"), strings.Contains(text, "udp dport 546 counter"):
		return DropRogueDHCP
	case table == FWTable && strings.Contains(text, "0xfffe"),
		table == L2Table && (chain == chUnkIn || chain == chUnkOut):
		return DropUnprogrammed
	case table == FWTable && chain == "forward":
		return DropRouted
	case table == L2Table && chain == chND:
		return DropSpoofedND
	case strings.Contains(text, "icmpv6 type 134"):
		return DropRogueRA
	case strings.Contains(text, "ct state invalid"), strings.Contains(text, "tcp flags"):
		return DropInvalid
	case table == L2Table && chain == chSpoof && text == "meta protocol arp counter drop":
		return DropSpoofedARP
	case table == L2Table && chain == chSpoof && text == "counter drop":
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
