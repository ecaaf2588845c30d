package dns

import (
	"encoding/binary"
	"strconv"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
)

// wireCache keeps packed answers, so a repeated question (authoritative or
// cached) costs a copy and two patches instead of building and packing a
// message: the ID, and the question as the client spelled it (case may
// differ, 0x20). TTLs are aged by repacking at most once a second per entry.
type wireCache struct {
	mu    sync.Mutex
	items map[string]*wireEntry
	size  int
}

type wireEntry struct {
	gen     uint64    // zone generation it was built under
	auth    bool      // an authoritative answer (for the counters)
	msg     *mdns.Msg // the answer as first built, TTLs as of built
	built   time.Time
	expires time.Time
	wire    []byte
	packed  time.Time // second the wire form was made for
}

func newWireCache(size int) *wireCache { return &wireCache{items: map[string]*wireEntry{}, size: size} }

func wireKey(gen uint64, q mdns.Question, edns bool, do bool) string {
	k := strconv.FormatUint(gen, 10) + "/" + mdns.CanonicalName(q.Name) + "/" + strconv.Itoa(int(q.Qtype)) + "/" + strconv.Itoa(int(q.Qclass))
	if edns {
		k += "/e"
	}
	if do {
		k += "/do"
	}
	return k
}

// get returns the answer to send for r, ready to write, or nil.
func (c *wireCache) get(key string, r *mdns.Msg, now time.Time) []byte {
	out, _, ok := c.getRaw([]byte(key), 0, false, now, nil)
	if !ok {
		return nil
	}
	binary.BigEndian.PutUint16(out, r.Id)
	// The question starts at byte 12; rewrite its name as asked. A name
	// that differs only in case packs to the same length.
	if _, err := mdns.PackDomainName(r.Question[0].Name, out, 12, nil, false); err != nil {
		return nil
	}
	return out
}

// getRaw appends the packed answer for key to dst. With checkGen, an
// entry built under another zone generation is a miss. Looking up with
// string(key) does not allocate.
func (c *wireCache) getRaw(key []byte, gen uint64, checkGen bool, now time.Time, dst []byte) ([]byte, bool, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[string(key)]
	if !ok || (checkGen && e.gen != gen) {
		return nil, false, false
	}
	if !now.Before(e.expires) {
		delete(c.items, string(key))
		return nil, false, false
	}
	sec := now.Truncate(time.Second)
	if !e.packed.Equal(sec) {
		m := e.msg.Copy()
		age := uint32(now.Sub(e.built) / time.Second)
		for _, rrs := range [][]mdns.RR{m.Answer, m.Ns, m.Extra} {
			for _, rr := range rrs {
				if h := rr.Header(); h.Rrtype != mdns.TypeOPT {
					if h.Ttl > age {
						h.Ttl -= age
					} else {
						h.Ttl = 0
					}
				}
			}
		}
		b, err := m.Pack()
		if err != nil {
			return nil, false, false
		}
		e.wire, e.packed = b, sec
	}
	return append(dst[:0], e.wire...), e.auth, true
}

// put stores an answer for ttl. The cache is bounded; when full, entries
// are dropped at random (map order), which is cheap and good enough for a
// cache whose entries also expire.
func (c *wireCache) put(key string, m *mdns.Msg, ttl uint32, now time.Time) {
	c.putGen(key, 0, m, ttl, now)
}

func (c *wireCache) putGen(key string, gen uint64, m *mdns.Msg, ttl uint32, now time.Time) {
	if ttl == 0 || c.size <= 0 {
		return
	}
	b, err := m.Pack()
	if err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.items) >= c.size {
		for k := range c.items {
			delete(c.items, k)
			break
		}
	}
	c.items[key] = &wireEntry{gen: gen, auth: m.Authoritative, msg: m.Copy(), built: now, expires: now.Add(time.Duration(ttl) * time.Second), wire: b, packed: now.Truncate(time.Second)}
}
