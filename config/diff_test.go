package config

import (
	"slices"
	"testing"
	"time"
)

func TestDiff_NamesEveryChangedKeyAsWrittenInTheFile(t *testing.T) {
	a, b := Default(), Default()
	if d := Diff(a, b); len(d) != 0 {
		t.Fatalf("defaults differ from themselves: %v", d)
	}
	b.Server.Listen = ":9999"
	b.Cache.TTL = Duration{Duration: time.Minute}
	b.Cache.Memory.TTL = Duration{Duration: time.Second}
	b.Redis.Addrs = []string{"10.0.0.1:6379"}
	b.Invalidate = append(b.Invalidate, InvalidateRule{Method: "POST", Path: "/x", ID: "json:id"})
	got := Diff(a, b)
	want := []string{"server.listen", "redis.addrs", "cache.ttl", "cache.memory.ttl", "invalidate"}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("Diff = %v, want %v", got, want)
	}
}
