package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// pollResult is one polling test.
type pollResult struct {
	System   string
	Requests int64
	Errors   int64
	Cache    map[string]int
	Upstream int64   // detail calls the fake saw during the test
	Windows  []int64 // upstream calls in each ttl window from the start
}

// poll runs clients that each GET url every interval for d, spread evenly
// over the interval, while calls() is sampled at every ttl boundary.
func poll(ctx context.Context, url, token string, clients int, interval, d, ttl time.Duration, calls func() int64) pollResult {
	r := pollResult{Cache: map[string]int{}}
	tr := &http.Transport{
		MaxIdleConns:        clients * 2,
		MaxIdleConnsPerHost: clients * 2,
		DisableCompression:  true,
		IdleConnTimeout:     30 * time.Second,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}

	var mu sync.Mutex
	var reqs, errs atomic.Int64
	start := time.Now()
	end := start.Add(d)
	base := calls()

	// Sampler: calls at each ttl boundary, and at the end.
	windows := int((d + ttl - 1) / ttl)
	marks := make([]int64, 0, windows+1)
	marks = append(marks, base)
	samplerDone := make(chan struct{})
	go func() {
		defer close(samplerDone)
		for k := 1; k <= windows; k++ {
			t := time.NewTimer(time.Until(start.Add(time.Duration(k) * ttl)))
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
			marks = append(marks, calls())
		}
	}()

	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			offset := time.Duration(i) * interval / time.Duration(clients)
			for k := 0; ; k++ {
				at := start.Add(offset + time.Duration(k)*interval)
				if !at.Before(end) {
					return
				}
				if w := time.Until(at); w > 0 {
					t := time.NewTimer(w)
					select {
					case <-t.C:
					case <-ctx.Done():
						t.Stop()
						return
					}
				} else if -w > interval {
					continue // fell behind by a whole tick: skip it, keep the schedule
				}
				reqs.Add(1)
				label, ok := pollOnce(ctx, client, url, token)
				if !ok {
					errs.Add(1)
				}
				mu.Lock()
				r.Cache[label]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	<-samplerDone
	time.Sleep(100 * time.Millisecond) // let a background refresh land in the count
	final := calls()
	if len(marks) == windows+1 {
		marks[windows] = max(marks[windows], final)
	}
	for k := 1; k < len(marks); k++ {
		r.Windows = append(r.Windows, marks[k]-marks[k-1])
	}
	r.Requests, r.Errors, r.Upstream = reqs.Load(), errs.Load(), final-base
	return r
}

func pollOnce(ctx context.Context, client *http.Client, url, token string) (label string, ok bool) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "error", false
	}
	req.Header.Set("token", token)
	resp, err := client.Do(req)
	if err != nil {
		return "error", false
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	label = resp.Header.Get("X-Cache") + resp.Header.Get("X-Cache-Status")
	if label == "" {
		label = "-"
	}
	var env struct {
		Code int `json:"code"`
	}
	if err != nil || resp.StatusCode != http.StatusOK || json.Unmarshal(body, &env) != nil || env.Code != 0 {
		return label, false
	}
	return label, true
}
