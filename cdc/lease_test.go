package cdc_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"anqi-edge/cdc"
	"anqi-edge/internal/redistest"
)

func TestRedisLease_HolderStopsReadingBeforeTheLeaseCanExpireWhenRedisIsGone(t *testing.T) {
	srv := redistest.Start(t)
	rc := srv.Client(t)
	const ttl = 3 * time.Second // long beside scheduling noise on a busy machine
	l := cdc.RedisLease(rc, "lease", ttl)
	held, release, err := l.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	srv.Kill()
	killed := time.Now()
	select {
	case <-held.Done():
		if d := time.Since(killed); d > ttl {
			t.Errorf("stopped %v after Redis died, later than the lease ttl %v: another replica may have read at the same time", d, ttl)
		}
		t.Logf("stopped %v after Redis died: %v", time.Since(killed).Round(time.Millisecond), context.Cause(held))
	case <-time.After(20 * time.Second):
		t.Fatal("still holding 20s after Redis died")
	}
}

func TestRedisLease_OneHolderAtATimeAndAStaleHolderIsReplaced(t *testing.T) {
	rc := redis.NewClient(&redis.Options{Addr: redistest.Shared(t)})
	t.Cleanup(func() { rc.Close() })
	key := redistest.Prefix(t) + "lease"
	const ttl = 600 * time.Millisecond
	a, b := cdc.RedisLease(rc, key, ttl), cdc.RedisLease(rc, key, ttl)

	heldA, releaseA, err := a.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*ttl)
	_, _, err = b.Acquire(ctx) // A renews: B must not get it
	cancel()
	if err == nil {
		t.Fatal("B acquired the lease while A held and renewed it")
	}
	if heldA.Err() != nil {
		t.Fatalf("A lost the lease while renewing: %v", context.Cause(heldA))
	}
	releaseA()
	if heldA.Err() == nil {
		t.Fatal("A's context still live after release")
	}
	start := time.Now()
	heldB, releaseB, err := b.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer releaseB()
	t.Logf("B took the released lease after %v", time.Since(start).Round(time.Millisecond))

	// Someone overwrites the key (an operator, a split brain): B notices.
	rc.Set(context.Background(), key, "someone-else", 0)
	select {
	case <-heldB.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("B kept reading after its lease was taken")
	}
}
