package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// stormResult is one cold-key storm.
type stormResult struct {
	System   string
	Requests int
	OK       int            // HTTP 200 with code 0
	Failed   map[string]int // reason -> count
	Cache    map[string]int // X-Cache (anqi-edge) or X-Cache-Status (nginx) -> count
	Upstream int64          // detail calls the fake saw
	Wall     time.Duration  // release to last answer
}

// storm opens n connections to hostPort, waits until all are connected,
// then releases one GET of path on each at once (a closed channel is the
// barrier) and reads every answer. Each connection carries one request.
func storm(ctx context.Context, hostPort, path, token string, n int) (stormResult, error) {
	r := stormResult{Requests: n, Failed: map[string]int{}, Cache: map[string]int{}}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()

	// Connect first, 64 dials at a time, so the storm itself is only
	// request bytes on open sockets.
	conns := make([]net.Conn, n)
	dialErrs := make([]error, n)
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			d := net.Dialer{Timeout: 5 * time.Second}
			conns[i], dialErrs[i] = d.DialContext(ctx, "tcp", hostPort)
		}()
	}
	wg.Wait()
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	for _, err := range dialErrs {
		if err != nil {
			return r, fmt.Errorf("storm: connecting %d sockets to %s: %v", n, hostPort, err)
		}
	}

	req := []byte("GET " + path + " HTTP/1.1\r\nHost: " + hostPort + "\r\ntoken: " + token +
		"\r\nUser-Agent: edgebench-storm\r\nConnection: close\r\n\r\n")
	release := make(chan struct{})
	type answer struct {
		cache string
		fail  string
	}
	answers := make([]answer, n)
	var ready sync.WaitGroup
	ready.Add(n)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ready.Done()
			select {
			case <-release:
			case <-ctx.Done():
				answers[i].fail = "cancelled"
				return
			}
			c.SetDeadline(time.Now().Add(30 * time.Second))
			if _, err := c.Write(req); err != nil {
				answers[i].fail = "write: " + errClass(err)
				return
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				answers[i].fail = "read: " + errClass(err)
				return
			}
			body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			if err != nil {
				answers[i].fail = "body: " + errClass(err)
				return
			}
			answers[i].cache = resp.Header.Get("X-Cache") + resp.Header.Get("X-Cache-Status")
			if resp.StatusCode != http.StatusOK {
				answers[i].fail = resp.Status
				return
			}
			var env struct {
				Code int `json:"code"`
			}
			if json.Unmarshal(body, &env) != nil || env.Code != 0 {
				answers[i].fail = fmt.Sprintf("code %d", env.Code)
			}
		}()
	}
	ready.Wait() // every goroutine is parked on the barrier
	t0 := time.Now()
	close(release)
	wg.Wait()
	r.Wall = time.Since(t0)
	for _, a := range answers {
		if a.cache != "" {
			r.Cache[a.cache]++
		}
		if a.fail != "" {
			r.Failed[a.fail]++
		} else {
			r.OK++
		}
	}
	return r, ctx.Err()
}

// errClass shortens a network error for the table.
func errClass(err error) string {
	s := err.Error()
	for _, k := range []string{"reset", "refused", "timeout", "EOF", "broken pipe"} {
		if strings.Contains(s, k) {
			return k
		}
	}
	return s
}

// counts renders a map as "A 12, B 3" in descending order.
func counts(m map[string]int) string {
	if len(m) == 0 {
		return "—"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}
