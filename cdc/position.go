package cdc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Position is a point in one server's binary log, always at a transaction
// boundary: reading on from it starts with a whole transaction.
type Position struct {
	File string `json:"file"`
	Pos  uint32 `json:"pos"`
	// The server it belongs to: a position is meaningless on another server
	// even when a file of the same name exists there.
	ServerID   uint32 `json:"server_id"`
	ServerUUID string `json:"server_uuid,omitempty"` // MySQL only
	// GTID is MariaDB's GTID state at this position ("domain-server-seq",
	// comma separated, as in @@gtid_binlog_pos). A server whose state is
	// behind it is not the one that wrote it, even with the same server_id
	// and file names (a rebuilt or restored server).
	GTID string `json:"gtid,omitempty"`
}

// gtidState maps a MariaDB replication domain to its last GTID.
type gtidState map[uint32]gtid

type gtid struct {
	server uint32
	seq    uint64
}

// parseGTIDState reads "0-1-42,1-2-7"; malformed parts are skipped.
func parseGTIDState(s string) gtidState {
	st := gtidState{}
	for _, part := range strings.Split(s, ",") {
		f := strings.Split(strings.TrimSpace(part), "-")
		if len(f) != 3 {
			continue
		}
		d, err1 := strconv.ParseUint(f[0], 10, 32)
		sv, err2 := strconv.ParseUint(f[1], 10, 32)
		n, err3 := strconv.ParseUint(f[2], 10, 64)
		if err1 == nil && err2 == nil && err3 == nil {
			st[uint32(d)] = gtid{uint32(sv), n}
		}
	}
	return st
}

func (st gtidState) String() string {
	domains := slices.Sorted(maps.Keys(st))
	parts := make([]string, 0, len(domains))
	for _, d := range domains {
		g := st[d]
		parts = append(parts, fmt.Sprintf("%d-%d-%d", d, g.server, g.seq))
	}
	return strings.Join(parts, ",")
}

// behind names the first domain where st is behind want, or "".
func (st gtidState) behind(want gtidState) string {
	for _, d := range slices.Sorted(maps.Keys(want)) {
		w := want[d]
		if g, ok := st[d]; !ok || g.seq < w.seq {
			return fmt.Sprintf("domain %d: the server is at %q, the position was taken at %d-%d-%d", d, st.String(), d, w.server, w.seq)
		}
	}
	return ""
}

func (p Position) String() string {
	if p.File == "" {
		return ""
	}
	return p.File + ":" + strconv.FormatUint(uint64(p.Pos), 10)
}

// PositionStore remembers the last position whose changes were all
// invalidated. Load reports ok=false when nothing is stored.
type PositionStore interface {
	Load(ctx context.Context) (p Position, ok bool, err error)
	Save(ctx context.Context, p Position) error
}

// MemoryPositions keeps the position in the process only.
type MemoryPositions struct {
	mu  sync.Mutex
	p   Position
	set bool
}

func (m *MemoryPositions) Load(context.Context) (Position, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.p, m.set, nil
}

func (m *MemoryPositions) Save(_ context.Context, p Position) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.p, m.set = p, true
	return nil
}

// RedisPositions stores the position as JSON under key (no expiry), shared
// by every replica so the one that takes the lease over resumes where the
// previous reader stopped.
func RedisPositions(c redis.UniversalClient, key string) PositionStore {
	return &redisPositions{c: c, key: key}
}

type redisPositions struct {
	c   redis.UniversalClient
	key string
}

func (r *redisPositions) Load(ctx context.Context) (Position, bool, error) {
	b, err := r.c.Get(ctx, r.key).Bytes()
	if errors.Is(err, redis.Nil) {
		return Position{}, false, nil
	}
	if err != nil {
		return Position{}, false, fmt.Errorf("cdc: loading position from redis key %s: %w", r.key, err)
	}
	var p Position
	if err := json.Unmarshal(b, &p); err != nil || p.File == "" {
		// A corrupt value is a lost position, not a reason to stop reading.
		return Position{}, false, nil
	}
	return p, true, nil
}

func (r *redisPositions) Save(ctx context.Context, p Position) error {
	b, _ := json.Marshal(p)
	if err := r.c.Set(ctx, r.key, b, 0).Err(); err != nil {
		return fmt.Errorf("cdc: saving position to redis key %s: %w", r.key, err)
	}
	return nil
}
