package openstack

import (
	"net/netip"
	"sort"

	"github.com/bothnia/bothnia/nft"
)

// Cover returns the fewest prefixes whose union is exactly the union of
// ps: overlapping and adjacent prefixes merge into ranges, and each range
// is cut into the largest aligned blocks it holds. Nothing outside ps is
// ever covered, so a rule per result admits exactly the members. The
// families are kept apart; the result is sorted.
func Cover(ps []netip.Prefix) []netip.Prefix {
	type span struct{ lo, hi netip.Addr }
	var spans []span
	for _, p := range ps {
		if p.IsValid() {
			p = p.Masked()
			spans = append(spans, span{p.Addr(), nft.LastAddr(p)})
		}
	}
	sort.Slice(spans, func(i, j int) bool {
		if spans[i].lo.Is4() != spans[j].lo.Is4() {
			return spans[i].lo.Is4()
		}
		return spans[i].lo.Less(spans[j].lo)
	})
	var merged []span
	for _, s := range spans {
		if n := len(merged); n > 0 {
			m := &merged[n-1]
			next := m.hi.Next()
			if m.lo.Is4() == s.lo.Is4() && (!next.IsValid() || !next.Less(s.lo)) {
				if m.hi.Less(s.hi) {
					m.hi = s.hi
				}
				continue
			}
		}
		merged = append(merged, s)
	}
	var out []netip.Prefix
	for _, s := range merged {
		lo := s.lo
		for {
			// The largest block that starts at lo and ends by s.hi.
			var p netip.Prefix
			for bits := 0; bits <= lo.BitLen(); bits++ {
				c := netip.PrefixFrom(lo, bits)
				if c.Masked().Addr() == lo && !s.hi.Less(nft.LastAddr(c)) {
					p = c
					break
				}
			}
			out = append(out, p)
			end := nft.LastAddr(p)
			if end == s.hi {
				break
			}
			lo = end.Next()
		}
	}
	return out
}
