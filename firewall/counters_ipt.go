package firewall

import (
	"regexp"
	"strconv"
	"strings"
)

var commentMatch = regexp.MustCompile(`-m comment --comment ("[^"]*"|\S+) `)

// iptDropReason names what a drop rule of the iptables rendering drops,
// from the tool that printed it (iptables-save, ip6tables-save,
// ebtables-save), its chain and its rule as printed; "" for other rules.
func iptDropReason(tool, chain, rule string) string {
	if !strings.HasPrefix(chain, iptPrefix) || !strings.HasSuffix(rule, "-j DROP") {
		return ""
	}
	switch {
	case strings.Contains(rule, "--state INVALID"), strings.Contains(rule, "--tcp-flags"):
		return DropInvalid
	case strings.Contains(rule, "--dport 68 -j DROP"), strings.Contains(rule, "--dport 546 -j DROP"):
		return DropRogueDHCP
	case strings.Contains(rule, "! --physdev-is-bridged"):
		return DropRouted
	case chain == iptPrefix+"known-in", chain == iptPrefix+"known-out", chain == ebUnknownIn, chain == ebUnknownOut:
		return DropUnprogrammed
	case strings.HasPrefix(chain, iptPrefix+"n") && rule == "-j DROP":
		return DropSpoofedND
	case strings.Contains(rule, "--icmpv6-type 134"):
		return DropRogueRA
	case tool == "ebtables-save" && (strings.HasPrefix(rule, "-p 802_1Q") || strings.HasPrefix(rule, "-p S-TAG")):
		return DropTagged
	case tool == "ebtables-save" && rule == "-p ARP -j DROP":
		return DropSpoofedARP
	case tool == "ebtables-save" && rule == "-j DROP":
		// A port's chain ends here: a MAC or ethertype not its own.
		return DropSpoofedSource
	case chain == iptPrefix+"sg-fallback" && rule == "-j DROP":
		return DropGroupDeny
	case strings.HasPrefix(chain, iptPrefix+"s") && rule == "-j DROP":
		// A source chain: an address not among the port's pairs.
		return DropSpoofedSource
	}
	return ""
}

// addIPTDrops adds the counters of one *-save -c output's drop rules.
// Lines read "[packets:bytes] -A chain rule...".
func addIPTDrops(out map[string]Counter, tool, saved string) {
	for _, line := range strings.Split(saved, "\n") {
		if !strings.HasPrefix(line, "[") {
			continue
		}
		counts, rest, ok := strings.Cut(line[1:], "] -A ")
		if !ok {
			continue
		}
		chain, rule, _ := strings.Cut(rest, " ")
		// bothnia's rules carry a comment (their hash); what they do is
		// the rest.
		rule = commentMatch.ReplaceAllString(rule, "")
		reason := iptDropReason(tool, chain, rule)
		if reason == "" {
			continue
		}
		p, b, _ := strings.Cut(counts, ":")
		pkts, err1 := strconv.ParseUint(p, 10, 64)
		bytes, err2 := strconv.ParseUint(b, 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		c := out[reason]
		c.Packets += pkts
		c.Bytes += bytes
		out[reason] = c
	}
}
