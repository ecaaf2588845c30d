package dns

import (
	"container/list"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
)

// cache keeps forwarded answers until their smallest TTL runs out, at
// most size entries, evicting the least recently used.
type cache struct {
	mu    sync.Mutex
	size  int
	ll    *list.List
	items map[string]*list.Element
	now   func() time.Time
}

type entry struct {
	key     string
	msg     *mdns.Msg
	expires time.Time
	stored  time.Time
}

func newCache(size int, now func() time.Time) *cache {
	return &cache{size: size, ll: list.New(), items: map[string]*list.Element{}, now: now}
}

func cacheKey(q mdns.Question, do bool) string {
	k := mdns.CanonicalName(q.Name) + "/" + mdns.TypeToString[q.Qtype] + "/" + mdns.ClassToString[q.Qclass]
	if do {
		k += "/do"
	}
	return k
}

// get returns a copy of the cached answer with TTLs aged, or nil.
func (c *cache) get(key string) *mdns.Msg {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		return nil
	}
	e := el.Value.(*entry)
	now := c.now()
	if !now.Before(e.expires) {
		c.ll.Remove(el)
		delete(c.items, key)
		return nil
	}
	c.ll.MoveToFront(el)
	m := e.msg.Copy()
	age := uint32(now.Sub(e.stored) / time.Second)
	for _, rrs := range [][]mdns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range rrs {
			if rr.Header().Rrtype == mdns.TypeOPT {
				continue
			}
			if rr.Header().Ttl > age {
				rr.Header().Ttl -= age
			} else {
				rr.Header().Ttl = 0
			}
		}
	}
	return m
}

// put stores an answer for its smallest TTL (negative answers for the SOA
// minimum, capped at five minutes). Answers with no TTL are not kept.
func (c *cache) put(key string, m *mdns.Msg) {
	ttl := minTTL(m)
	if ttl == 0 || c.size <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if el, ok := c.items[key]; ok {
		c.ll.Remove(el)
		delete(c.items, key)
	}
	el := c.ll.PushFront(&entry{key: key, msg: m.Copy(), stored: now, expires: now.Add(time.Duration(ttl) * time.Second)})
	c.items[key] = el
	for c.ll.Len() > c.size {
		old := c.ll.Back()
		c.ll.Remove(old)
		delete(c.items, old.Value.(*entry).key)
	}
}

func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}

func minTTL(m *mdns.Msg) uint32 {
	if m.Rcode != mdns.RcodeSuccess && m.Rcode != mdns.RcodeNameError {
		return 0
	}
	var ttl uint32
	first := true
	for _, rr := range m.Answer {
		if first || rr.Header().Ttl < ttl {
			ttl, first = rr.Header().Ttl, false
		}
	}
	if len(m.Answer) == 0 {
		for _, rr := range m.Ns {
			if soa, ok := rr.(*mdns.SOA); ok {
				ttl, first = min(soa.Minttl, soa.Hdr.Ttl, 300), false
			}
		}
	}
	if first {
		return 0
	}
	return ttl
}
