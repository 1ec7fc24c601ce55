package cache

import "time"

// Policy says how long an entry may be served and how. Every field is a
// cache.* config key; zero values mean "never" for the stale windows.
type Policy struct {
	TTL                  time.Duration // cache.ttl: fresh
	StaleWhileRevalidate time.Duration // past TTL: serve stale while one refresh runs
	StaleIfError         time.Duration // past TTL: serve stale only when the origin fails
	NegativeTTL          time.Duration // cache.negative_ttl: how long a code != 0 answer is kept
	// Jitter spreads TTL by ±Jitter (0.1 = ±10%), so orders filled together
	// do not all expire together.
	Jitter float64
}

// Freshness is what an entry's age allows.
type Freshness int

const (
	Fresh      Freshness = iota // serve as a HIT
	Revalidate                  // serve STALE, refresh in the background
	IfError                     // serve STALE only if the origin fails
	Expired                     // unusable
)

// TTL is e's freshness lifetime. The jitter is derived from the entry's
// stored-at time, so it is the same on every replica and every read.
func (p *Policy) ttl(e *Entry) time.Duration {
	if e.Negative {
		return p.NegativeTTL
	}
	if p.Jitter == 0 {
		return p.TTL
	}
	u := float64((uint64(e.StoredAt)*0x9E3779B97F4A7C15)>>11) / (1 << 53) // [0,1)
	return time.Duration(float64(p.TTL) * (1 + p.Jitter*(2*u-1)))
}

// State classifies e at now (unix nanoseconds).
func (p *Policy) State(e *Entry, now int64) Freshness {
	age := e.Age(now)
	ttl := p.ttl(e)
	switch {
	case age < ttl:
		return Fresh
	case e.Negative:
		return Expired
	case age < ttl+p.StaleWhileRevalidate:
		return Revalidate
	case age < ttl+p.StaleIfError:
		return IfError
	}
	return Expired
}

// Keep is how long a tier holds e: past its ttl for as long as it may still
// be served stale.
func (p *Policy) Keep(e *Entry) time.Duration {
	if e.Negative {
		return p.NegativeTTL
	}
	return p.ttl(e) + max(p.StaleWhileRevalidate, p.StaleIfError)
}

// MaxKeep bounds Keep over every entry: L1 expires items after it.
func (p *Policy) MaxKeep() time.Duration {
	return time.Duration(float64(p.TTL)*(1+p.Jitter)) + max(p.StaleWhileRevalidate, p.StaleIfError, p.NegativeTTL)
}
