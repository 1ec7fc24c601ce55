package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// Client modes: how a customer's page follows its order.
const (
	modeSSE      = "SSE"       // GET /api/communication/order/events, one event per change
	modeLongPoll = "long-poll" // GET /api/communication/order/watch?etag=E, again after each answer
	modePoll     = "poll"      // GET /api/communication/order/detail every -poll
)

const (
	detailPath = "/api/communication/order/detail"
	watchPath  = "/api/communication/order/watch"
	eventsPath = "/api/communication/order/events"
)

// client is one customer following one order through one front (a replica
// or nginx). It notes when it first sees each benchmark message: the first
// answer or event whose body holds it.
type client struct {
	mode    string
	order   int64
	token   string
	base    string
	marker  []byte // "cdcbench-<system>-": what precedes a change's sequence number
	poll    time.Duration
	stagger time.Duration
	hc      *http.Client

	ready     chan struct{} // closed after the first successful read
	readyOnce sync.Once

	mu   sync.Mutex
	seen map[int]time.Time // sequence number -> first time served
}

func (c *client) markReady() { c.readyOnce.Do(func() { close(c.ready) }) }

// note records the changes body holds, at the time it was read.
func (c *client) note(body []byte, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for rest := body; ; {
		i := bytes.Index(rest, c.marker)
		if i < 0 {
			return
		}
		rest = rest[i+len(c.marker):]
		n := 0
		for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
			n++
		}
		if seq, err := strconv.Atoi(string(rest[:n])); err == nil {
			if _, ok := c.seen[seq]; !ok {
				c.seen[seq] = at
			}
		}
		rest = rest[n:]
	}
}

func (c *client) saw(seq int) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.seen[seq]
	return t, ok
}

func (c *client) get(ctx context.Context, u string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("token", c.token)
	return c.hc.Do(req)
}

// run follows the order until ctx ends. Errors (a replica restarting, a
// 503) are retried after a short pause: what counts is what was served.
func (c *client) run(ctx context.Context) {
	id := strconv.FormatInt(c.order, 10)
	switch c.mode {
	case modePoll:
		c.runPoll(ctx, c.base+detailPath+"?id="+id)
	case modeLongPoll:
		c.runLongPoll(ctx, c.base+watchPath+"?id="+id+"&etag=")
	case modeSSE:
		c.runSSE(ctx, c.base+eventsPath+"?id="+id)
	}
}

func pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (c *client) runPoll(ctx context.Context, u string) {
	// Spread the pollers evenly over the interval, as real pages are.
	if !pause(ctx, c.stagger) {
		return
	}
	tick := time.NewTicker(c.poll)
	defer tick.Stop()
	for {
		if resp, err := c.get(ctx, u); err == nil {
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode == http.StatusOK {
				c.note(body, time.Now())
				c.markReady()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (c *client) runLongPoll(ctx context.Context, u string) {
	etag := ""
	for ctx.Err() == nil {
		resp, err := c.get(ctx, u+url.QueryEscape(etag))
		if err != nil {
			pause(ctx, 100*time.Millisecond)
			continue
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case err != nil:
			pause(ctx, 100*time.Millisecond)
		case resp.StatusCode == http.StatusOK:
			c.note(body, time.Now())
			etag = resp.Header.Get("ETag")
			c.markReady()
		case resp.StatusCode == http.StatusNotModified:
		default:
			pause(ctx, 100*time.Millisecond)
		}
	}
}

func (c *client) runSSE(ctx context.Context, u string) {
	for ctx.Err() == nil {
		resp, err := c.get(ctx, u)
		if err != nil {
			pause(ctx, 100*time.Millisecond)
			continue
		}
		if resp.StatusCode != http.StatusOK {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			pause(ctx, 100*time.Millisecond)
			continue
		}
		// Each event's data is one line of JSON: note each line as it
		// arrives, the moment the customer's page could show it.
		r := bufio.NewReaderSize(resp.Body, 64<<10)
		for {
			line, err := r.ReadSlice('\n')
			if err == bufio.ErrBufferFull {
				// A longer line: read the rest of it before noting.
				full := append([]byte(nil), line...)
				for err == bufio.ErrBufferFull {
					line, err = r.ReadSlice('\n')
					full = append(full, line...)
				}
				line = full
			}
			if len(line) > 0 && bytes.HasPrefix(line, []byte("data:")) {
				c.note(line, time.Now())
				c.markReady()
			}
			if err != nil {
				break
			}
		}
		resp.Body.Close()
	}
}
