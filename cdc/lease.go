package cdc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Lease elects the one replica that reads the binary log.
//
// Acquire blocks until this process holds the lease (or ctx ends) and
// returns a context that is cancelled as soon as the lease may be held by
// someone else, plus a release func that gives it up at once.
type Lease interface {
	Acquire(ctx context.Context) (held context.Context, release func(), err error)
}

// Default lease timings: a dead holder is replaced within TTL plus one
// retry interval (about 4s).
const (
	DefaultLeaseTTL = 3 * time.Second
)

// RedisLease is a lease held as key = random token, SET NX PX ttl and
// renewed every ttl/4 by a script that only extends our own token; others
// try to take it every ttl/3. When a
// renewal fails or cannot reach Redis until the lease could have expired,
// the holder stops reading before anyone else can take over. ttl 0 means
// DefaultLeaseTTL.
func RedisLease(c redis.UniversalClient, key string, ttl time.Duration) Lease {
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	return &redisLease{c: c, key: key, ttl: ttl}
}

type redisLease struct {
	c   redis.UniversalClient
	key string
	ttl time.Duration
}

var renewScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0`)

var releaseScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("DEL", KEYS[1])
end
return 0`)

func (l *redisLease) Acquire(ctx context.Context) (context.Context, func(), error) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	retry := l.ttl / 3
	for {
		start := time.Now()
		ok, err := l.c.SetNX(ctx, l.key, token, l.ttl).Result()
		if err == nil && ok {
			return l.hold(ctx, token, start)
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(retry):
		}
	}
}

// hold renews the lease until ctx ends, it is lost, or release is called.
// acquiredAt is taken before the SET was sent: the lease surely expires no
// earlier than acquiredAt+ttl on the server, so that is our own deadline.
//
// Renewals run every ttl/4 and give up after ttl/4, so after a failed one
// the next answer comes within ttl/2. If that could be after our deadline
// (less than ttl/2, plus a margin, is left), reading stops now: the holder
// always stops before another replica can take the lease, so two readers
// never overlap (beyond one invalidation in flight, which is harmless).
func (l *redisLease) hold(ctx context.Context, token string, acquiredAt time.Time) (context.Context, func(), error) {
	held, cancel := context.WithCancelCause(ctx)
	stopped := make(chan struct{})
	done := make(chan struct{})
	period := l.ttl / 4
	go func() {
		defer close(done)
		validUntil := acquiredAt.Add(l.ttl)
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-held.Done():
				return
			case <-stopped:
				return
			case <-t.C:
			}
			sent := time.Now()
			rctx, rcancel := context.WithTimeout(held, period)
			n, err := renewScript.Run(rctx, l.c, []string{l.key}, token, l.ttl.Milliseconds()).Int()
			rcancel()
			switch {
			case err == nil && n == 1:
				validUntil = sent.Add(l.ttl)
			case err == nil:
				cancel(errors.New("cdc: lease taken by another replica"))
				return
			case time.Until(validUntil) < l.ttl/2+l.ttl/10:
				cancel(errors.New("cdc: lease could not be renewed before it may expire: " + err.Error()))
				return
			}
		}
	}()
	var once sync.Once
	release := func() {
		once.Do(func() {
			close(stopped)
			<-done
			cancel(errors.New("cdc: lease released"))
			rctx, rcancel := context.WithTimeout(context.Background(), time.Second)
			_ = releaseScript.Run(rctx, l.c, []string{l.key}, token).Err()
			rcancel()
		})
	}
	return held, release, nil
}
