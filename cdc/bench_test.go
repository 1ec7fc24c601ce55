package cdc_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"anqi-edge/cdc"
)

// BenchmarkCDC_CommitToInvalidate measures, per change, the time from
// sending an autocommit INSERT to the reader calling Invalidate for its
// order (the statement's round trip included), on a real MariaDB. Reported:
// p50, p99 and max in milliseconds.
//
//	go test -run '^$' -bench CommitToInvalidate -benchtime 500x ./cdc/
func BenchmarkCDC_CommitToInvalidate(b *testing.B) {
	s := startDBForBench(b)
	got := make(chan int64, 1)
	log := &logBuf{}
	o := cdc.Options{
		Addr: s.Addr(), User: "cdc", Password: "pw", Tables: tables, Settle: -1,
		Invalidate: func(_ context.Context, order int64) error {
			select {
			case got <- order:
			default:
			}
			return nil
		},
		ResetAll: func(context.Context) error { return nil },
	}
	o.Log = newTextLogger(log)
	rd, err := cdc.New(o)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); rd.Run(ctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(20 * time.Second)
	for rd.Status().State != cdc.StateStreaming {
		if time.Now().After(deadline) {
			b.Fatalf("reader not streaming: %+v", rd.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	db := s.Root(b)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		order := int64(i + 1)
		start := time.Now()
		if _, err := db.Exec("INSERT INTO anqicms.communication_messages (comm_order_id, content) VALUES (?, 'x')", order); err != nil {
			b.Fatal(err)
		}
		for o := range got {
			if o == order {
				break
			}
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))]) / 1e6 }
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(q(1), "max-ms")
}
