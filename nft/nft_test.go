package nft

import (
	"net/netip"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

func TestPrefixElem(t *testing.T) {
	cases := []struct{ p, key, end string }{
		{"10.101.128.10/32", "10.101.128.10", "10.101.128.11"},
		{"192.168.0.0/24", "192.168.0.0", "192.168.1.0"},
		{"255.255.255.0/24", "255.255.255.0", "0.0.0.0"}, // runs to the top: open end
	}
	for _, c := range cases {
		e := PrefixElem(netip.MustParsePrefix(c.p))
		k, _ := netip.AddrFromSlice(e.Key)
		end, _ := netip.AddrFromSlice(e.KeyEnd)
		if k.String() != c.key || end.String() != c.end {
			t.Errorf("%s: key %s end %s, want %s %s", c.p, k, end, c.key, c.end)
		}
	}
}

func TestKeyPadsToRegisters(t *testing.T) {
	k := Key(IfName("tap0"), MAC("fa:16:3e:00:00:01"), []byte{10, 0, 0, 1})
	if len(k) != 16+8+4 {
		t.Fatalf("key length %d, want 28 (ifname 16, MAC 6 padded to 8, IPv4 4)", len(k))
	}
	if k[22] != 0 || k[23] != 0 || k[24] != 10 {
		t.Fatalf("padding wrong: % x", k)
	}
}

// Read-back pairs an interval set's start and end elements, also where
// one range ends at the next one's start.
func TestReadElemsPairsIntervals(t *testing.T) {
	a := PrefixElem(netip.MustParsePrefix("10.0.0.0/32")) // 10.0.0.0 - 10.0.0.1
	b := PrefixElem(netip.MustParsePrefix("10.0.0.1/32")) // 10.0.0.1 - 10.0.0.2
	els := []nftables.SetElement{
		{Key: b.KeyEnd, IntervalEnd: true}, {Key: b.Key}, {Key: a.KeyEnd, IntervalEnd: true}, {Key: a.Key},
	}
	got := readElems(els, true, 4)
	if len(got) != 2 || ElemID(got[0]) != ElemID(a) || ElemID(got[1]) != ElemID(b) {
		t.Fatalf("got %v, want the two ranges", got)
	}
}

func TestParseVerdict(t *testing.T) {
	// NFTA_VERDICT_CODE = NFT_JUMP (-3), NFTA_VERDICT_CHAIN = "src-1"
	b := []byte{8, 0, 1, 0, 0xff, 0xff, 0xff, 0xfd, 10, 0, 2, 0, 's', 'r', 'c', '-', '1', 0, 0, 0}
	v, ok := parseVerdict(b)
	if !ok || v.Kind != expr.VerdictJump || v.Chain != "src-1" {
		t.Fatalf("got %+v %v", v, ok)
	}
}

func TestRuleTextAndExprsGoTogether(t *testing.T) {
	r := R().Iifname("tap0").L4Proto(6).Dport("tcp", 7000, 7000).Accept()
	if r.Text != `iifname "tap0" meta l4proto tcp tcp dport 7000 accept` {
		t.Fatalf("text %q", r.Text)
	}
	if len(r.Exprs) != 7 { // meta+cmp, meta+cmp, payload+cmp, verdict
		t.Fatalf("%d expressions", len(r.Exprs))
	}
}

func TestElemIdentity(t *testing.T) {
	a := MarkVerdictElem(0x10000, "egress-1")
	b := MarkVerdictElem(0x10000, "egress-2")
	if keyID(a) != keyID(b) || ElemID(a) == ElemID(b) {
		t.Fatal("same key, other verdict: one key, two identities")
	}
}

// SameElem is ElemID's equality without the strings: they must agree on
// every pair, including the empty and absent parts they tell apart.
func TestSameElemAgreesWithElemID(t *testing.T) {
	es := []Elem{
		MarkVerdictElem(0x10000, "egress-1"), MarkVerdictElem(0x10000, "egress-2"), MarkVerdictElem(0x20000, "egress-1"),
		{Key: []byte{1}, Verdict: &expr.Verdict{Kind: expr.VerdictAccept}}, {Key: []byte{1}, Verdict: &expr.Verdict{Kind: expr.VerdictDrop}},
		IfMarkElem("tap1", 0x10000), IfMarkElem("tap1", 0x20000), IfMarkElem("tap2", 0x10000),
		{Key: []byte{1, 2}}, {Key: []byte{1, 2}, KeyEnd: []byte{}}, {Key: []byte{1, 2}, KeyEnd: []byte{3}},
		{Key: []byte{1, 2}, Val: []byte{}}, {Key: []byte{1, 2}, Val: []byte{0}}, {Key: []byte{1}, KeyEnd: []byte{2}},
	}
	for i, a := range es {
		for j, b := range es {
			if got, want := SameElem(a, b), ElemID(a) == ElemID(b); got != want {
				t.Errorf("elements %d and %d: SameElem %v, ElemID equal %v", i, j, got, want)
			}
		}
	}
}
