package cdc

import (
	"time"

	"anqi-edge/config"
)

// FromConfig fills the database and timing fields of Options from the
// [cdc] section; the caller adds Invalidate, ResetAll, Positions, Lease,
// Metrics and Log. It translates the one difference in meaning: in the file
// settle = "0s" turns the second invalidation off, in Options that is a
// negative Settle (zero there means the default).
func FromConfig(c config.CDC) Options {
	o := Options{
		Addr:        c.Addr,
		User:        c.User,
		Password:    c.Password,
		ServerID:    uint32(c.ServerID),
		Settle:      c.Settle.Duration,
		Heartbeat:   c.Heartbeat.Duration,
		ReadTimeout: c.ReadTimeout.Duration,
	}
	if o.Settle == 0 {
		o.Settle = -time.Nanosecond
	}
	for _, t := range c.Tables {
		o.Tables = append(o.Tables, Table{Name: t.Name, OrderColumn: t.OrderColumn})
	}
	return o
}
