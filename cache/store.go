package cache

import (
	"context"
	"sync"
)

// Store is both tiers together, and the one place an order is invalidated,
// whatever asked for it (a proxied write, the purge API, another replica).
type Store struct {
	L1    *L1
	Redis *Redis // nil: L1 only

	mu       sync.RWMutex
	watchers []func(order int64)
}

// OnChange registers f to be told of every invalidation, local or remote,
// after the tiers dropped the order. f must not block.
func (s *Store) OnChange(f func(order int64)) {
	s.mu.Lock()
	s.watchers = append(s.watchers, f)
	s.mu.Unlock()
}

func (s *Store) notify(order int64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, f := range s.watchers {
		f(order)
	}
}

// Invalidate drops every identity's entry for order, in L1 at once and in
// Redis (queued if Redis cannot be reached), and tells every replica.
//
// L1 is bumped twice. The first bump stops this replica serving the old
// answer at once. Between it and the Redis script, a concurrent miss could
// still read the old entry from Redis and store it in L1 under the new
// generation; the second bump, after Redis has dropped the entry, voids
// anything stored in that window.
func (s *Store) Invalidate(ctx context.Context, order int64) (queued bool, err error) {
	s.L1.Invalidate(order)
	if s.Redis != nil {
		queued, err = s.Redis.Invalidate(ctx, order)
		s.L1.Invalidate(order)
	}
	s.notify(order)
	return queued, err
}

// Remote applies an invalidation another replica published: Redis has
// already dropped the order, so only L1 and watchers are left.
func (s *Store) Remote(order int64) {
	s.L1.Invalidate(order)
	s.notify(order)
}

// Clear drops all of L1 and wakes every watcher (notify with order 0 means
// "anything may have changed").
func (s *Store) Clear() {
	s.L1.Clear()
	s.notify(0)
}
