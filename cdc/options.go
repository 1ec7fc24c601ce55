package cdc

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"strings"
	"time"
)

// Defaults for the zero fields of Options.
const (
	DefaultSettle      = 500 * time.Millisecond
	DefaultHeartbeat   = 2 * time.Second
	DefaultReadTimeout = 6 * time.Second

	minBackoff = 200 * time.Millisecond
	maxBackoff = 10 * time.Second
)

// Table maps one table to the column holding the order id.
type Table struct {
	Name        string // "table" (any database) or "database.table"
	OrderColumn string // e.g. "id" for the orders table, "comm_order_id" for messages
}

// Options configures a Reader. Zero values mean the documented default.
type Options struct {
	Addr     string // "host:port" or a unix socket path (contains "/"); required
	User     string
	Password string
	// ServerID is this reader's replica id, unique on the server; 0 = derived
	// from the host name and process id.
	ServerID uint32
	Tables   []Table // at least one

	// Settle is the delay of the second invalidation of every changed order
	// (see settle.go); default 500ms, negative = no second invalidation.
	Settle time.Duration
	// Heartbeat asks the server to send a heartbeat when it has had nothing
	// to send for this long (default 2s); ReadTimeout (default 6s, must
	// exceed Heartbeat) ends a connection that stayed silent this long, so a
	// dead network is noticed even when no packet says so.
	Heartbeat, ReadTimeout time.Duration

	// Invalidate drops every cached copy of order: the same path a proxied
	// write takes (L1, Redis, other replicas, watchers). Required.
	Invalidate func(ctx context.Context, order int64) error
	// ResetAll drops every cached order (bumps the epoch). Called before
	// reading on when the stored position is gone. Required.
	ResetAll func(ctx context.Context) error

	// Positions remembers where reading stopped; nil = in memory only (a
	// restart of the process starts at the server's current position).
	Positions PositionStore
	// Lease decides which replica reads; nil = this one always reads.
	Lease Lease

	Metrics *Metrics     // nil = not exported
	Log     *slog.Logger // nil = slog.Default()
}

func (o *Options) setDefaults() {
	if o.Settle == 0 {
		o.Settle = DefaultSettle
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = DefaultHeartbeat
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = max(DefaultReadTimeout, 3*o.Heartbeat)
	}
	if o.ServerID == 0 {
		o.ServerID = DefaultServerID()
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
}

func (o *Options) validate() error {
	var errs []error
	if o.Addr == "" {
		errs = append(errs, errors.New("cdc.addr: empty (set the MySQL/MariaDB host:port AnqiCMS writes to)"))
	}
	if len(o.Tables) == 0 {
		errs = append(errs, errors.New("cdc.table: no table to watch (add [[cdc.table]] with name and order_column)"))
	}
	for i, t := range o.Tables {
		if strings.TrimSpace(t.Name) == "" {
			errs = append(errs, fmt.Errorf("cdc.table[%d].name: empty", i))
		} else if strings.Count(t.Name, ".") > 1 {
			errs = append(errs, fmt.Errorf("cdc.table[%d].name: %q is not \"table\" or \"database.table\"", i, t.Name))
		}
		if strings.TrimSpace(t.OrderColumn) == "" {
			errs = append(errs, fmt.Errorf("cdc.table[%d].order_column: empty", i))
		}
	}
	if o.ReadTimeout <= o.Heartbeat {
		errs = append(errs, fmt.Errorf("cdc.read_timeout: %v must be longer than cdc.heartbeat %v", o.ReadTimeout, o.Heartbeat))
	}
	if o.Invalidate == nil || o.ResetAll == nil {
		errs = append(errs, errors.New("cdc: Invalidate and ResetAll are required"))
	}
	return errors.Join(errs...)
}

// DefaultServerID derives a replica id from the host name and process id, in
// [2^30, 2^31): away from the small ids operators give real replicas, and
// different for two anqi-edge processes on one host.
func DefaultServerID() uint32 {
	h := fnv.New32a()
	host, _ := os.Hostname()
	fmt.Fprintf(h, "%s/%d", host, os.Getpid())
	return 1<<30 | h.Sum32()&(1<<30-1)
}
