package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"unsafe"

	"github.com/redis/go-redis/v9"
)

// The lookup of a Redis hit is the one Redis call on the read path, so it
// is built for that (issue 13): when other lookups are under way it rides
// go-redis's autopipeliner, and on a single server (or Sentinel) its reply
// is read raw and decoded in place.
//
// The autopipeliner queues the lookups that concurrent requests make while
// one batch is on the wire and sends them as the next batch: one write(2)
// and one read(2) for many hits instead of one round trip each, which was
// most of what a Redis hit cost beyond an L1 hit under load. A lookup
// with no other under way goes straight out on a pooled connection
// instead: a batch of one would pay the autopipeliner's hand-off to its
// dispatcher goroutine and its per-batch bookkeeping for nothing (in an
// A/B of the many-user run, where lookups rarely overlap, batching every
// lookup cost 183 µs of CPU per request against 159 µs without).
//
// What batching changes when Redis misbehaves: a batched lookup does not
// honour its context's deadline (the fresh read on the request's
// goroutine has none anyway; a flight's read has RedisBudget's). It may
// wait for the batch ahead of it,
// and its own batch is bounded by the connection's timeouts (redis.timeout
// for the write and again for reading all the batch's replies, plus
// waiting for a pooled connection), so it can take about twice what a
// lone lookup can. And a batch fails as a whole: when its read times out,
// every lookup in it fails and counts toward the breaker, which then opens
// at once instead of after redis.breaker_failures separate failures; the
// replica serves from L1 and AnqiCMS meanwhile, as for any Redis failure.
//
// Reading raw saves what go-redis's typed MGET allocates per call: a boxed
// argument per key, a []interface{} reply and a string per value. The
// arguments are *string (boxing a pointer is free) into a pooled lookup,
// and the entry aliases the raw reply buffer, which belongs to this call
// alone.
//
// A cluster keeps the typed MGET (batched per node all the same): a raw
// reply hides MOVED and ASK from the cluster client, which must see them
// as errors to follow a resharding.

// lookupArgs is the reusable argument list of one raw lookup.
type lookupArgs struct {
	keys [2]string
	args [4]any
}

var lookupPool = sync.Pool{New: func() any {
	l := &lookupArgs{}
	l.args[0] = "mget"
	l.args[1], l.args[2] = &l.keys[0], &l.keys[1]
	return l
}}

// autopipeliner builds c's autopipeliner for batched lookups (see above),
// or nil when not asked for or go-redis cannot build one.
func autopipeliner(c redis.UniversalClient, want bool) redis.UniversalClient {
	if c == nil || !want {
		return nil
	}
	ap, err := c.AutoPipeline()
	if err != nil {
		return nil
	}
	return ap
}

// process runs one lookup command: through the autopipeliner when other
// lookups are under way, else on the plain client.
func (r *Redis) process(ctx context.Context, cmd redis.Cmder) error {
	defer r.inflight.Add(-1)
	if r.inflight.Add(1) > 1 && r.batched != nil {
		return r.batched.Process(ctx, cmd)
	}
	return r.c.Process(ctx, cmd)
}

// mget reads genKey, entryKey and, when epochInGet, the epoch key in one
// command, into vals (nil = no such key). The values alias memory that
// belongs to this call alone.
func (r *Redis) mget(ctx context.Context, genKey, entryKey string, vals *[3][]byte) error {
	if r.cluster {
		return r.mgetTyped(ctx, genKey, entryKey, vals)
	}
	l := lookupPool.Get().(*lookupArgs)
	l.keys[0], l.keys[1] = genKey, entryKey
	args := l.args[:3]
	if r.epochInGet {
		l.args[3] = &r.epochK
		args = l.args[:4]
	}
	cmd := redis.NewRawCmd(ctx, args...)
	err := r.process(ctx, cmd)
	// Both clients return once the command has run (or failed; the
	// autopipeliner's blocking face included), so nothing in go-redis
	// still points at the arguments.
	l.keys = [2]string{}
	l.args[3] = nil
	lookupPool.Put(l)
	if err != nil {
		return err
	}
	return parseMGet(cmd.Val(), vals[:len(args)-1])
}

// mgetTyped is mget on a cluster, where the epoch lives in another slot
// and is not read with the order's keys (epochInGet is false).
func (r *Redis) mgetTyped(ctx context.Context, genKey, entryKey string, vals *[3][]byte) error {
	cmd := redis.NewSliceCmd(ctx, "mget", genKey, entryKey)
	if err := r.process(ctx, cmd); err != nil {
		return err
	}
	got := cmd.Val()
	if len(got) != 2 {
		return fmt.Errorf("MGET answered %d values for 2 keys", len(got))
	}
	for i, v := range got {
		if s, ok := v.(string); ok {
			vals[i] = unsafe.Slice(unsafe.StringData(s), len(s))
			if vals[i] == nil {
				vals[i] = []byte{} // an empty value is not a missing key
			}
		}
	}
	return nil
}

var errRESP = errors.New("unexpected MGET reply")

// parseMGet decodes MGET's raw reply, an array of len(vals) bulk strings
// or nulls (RESP2 "$-1", RESP3 "_"), into vals; an error reply becomes an
// error. It reads only what RESP allows here and rejects the rest, so a
// reply it does not understand is a failed lookup, never a wrong hit.
func parseMGet(raw []byte, vals [][]byte) error {
	line, rest, err := respLine(raw)
	if err != nil {
		return err
	}
	switch line[0] {
	case '-':
		return errors.New(string(line[1:]))
	case '!': // a RESP3 blob error: its text is on the next line
		return fmt.Errorf("redis error reply: %.200q", rest)
	}
	if line[0] != '*' {
		return fmt.Errorf("%w: %.40q", errRESP, line)
	}
	if n, err := strconv.Atoi(unsafe.String(unsafe.SliceData(line[1:]), len(line)-1)); err != nil || n != len(vals) {
		return fmt.Errorf("%w: %q for %d keys", errRESP, line, len(vals))
	}
	for i := range vals {
		if line, rest, err = respLine(rest); err != nil {
			return err
		}
		switch {
		case line[0] == '_' && len(line) == 1, line[0] == '$' && string(line) == "$-1":
			vals[i] = nil
		case line[0] == '$':
			n, err := strconv.Atoi(unsafe.String(unsafe.SliceData(line[1:]), len(line)-1))
			if err != nil || n < 0 || n > len(rest)-2 || rest[n] != '\r' || rest[n+1] != '\n' {
				return fmt.Errorf("%w: bulk %.40q", errRESP, line)
			}
			vals[i], rest = rest[:n:n], rest[n+2:]
		default:
			return fmt.Errorf("%w: element %.40q", errRESP, line)
		}
	}
	if len(rest) != 0 {
		return fmt.Errorf("%w: %d bytes after the array", errRESP, len(rest))
	}
	return nil
}

// respLine splits one CRLF-terminated line off b; the line is not empty.
func respLine(b []byte) (line, rest []byte, err error) {
	i := bytes.Index(b, []byte("\r\n"))
	if i <= 0 {
		return nil, nil, fmt.Errorf("%w: %.40q", errRESP, b)
	}
	return b[:i], b[i+2:], nil
}
