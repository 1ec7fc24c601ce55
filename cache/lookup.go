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
// dispatcher goroutine and its per-batch bookkeeping for nothing (about
// 15% more CPU per request in the many-user run, where lookups rarely
// overlap). A batched lookup no longer honours its request's deadline; it
// is bounded by the connection's read and write timeouts (redis.timeout)
// instead, which is the bound the breaker is tuned to anyway.
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

// via picks the client for one lookup: the autopipeliner when other
// lookups are under way, else the plain client. The caller decrements
// r.inflight when the lookup has its answer.
func (r *Redis) via() redis.UniversalClient {
	if r.inflight.Add(1) > 1 && r.batched != nil {
		return r.batched
	}
	return r.c
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
	err := r.via().Process(ctx, cmd)
	r.inflight.Add(-1)
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

func (r *Redis) mgetTyped(ctx context.Context, genKey, entryKey string, vals *[3][]byte) error {
	keys := []string{genKey, entryKey}
	if r.epochInGet {
		keys = append(keys, r.epochK)
	}
	got, err := r.via().MGet(ctx, keys...).Result()
	r.inflight.Add(-1)
	if err != nil {
		return err
	}
	if len(got) != len(keys) {
		return fmt.Errorf("MGET answered %d values for %d keys", len(got), len(keys))
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
	if line[0] == '-' || line[0] == '!' {
		return errors.New(string(line[1:]))
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
			if err != nil || n < 0 || n+2 > len(rest) || rest[n] != '\r' || rest[n+1] != '\n' {
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
