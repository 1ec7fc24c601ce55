package main

import (
	"bytes"
	"io"
	"log"
	"sync"
	"sync/atomic"
)

// unsolicitedMarker is what net/http's Transport logs (through the standard
// log package) when a server writes on a keep-alive connection while no
// request is waiting on it. No request gets that answer, so it is not a
// violation, but a request sent on the connection at that instant would
// have it read as its own answer: the summary counts them.
var unsolicitedMarker = []byte("Unsolicited response received on idle HTTP channel")

// logCounter passes the standard logger's lines on to w and counts those
// that report an unsolicited response.
type logCounter struct {
	mu          sync.Mutex
	w           io.Writer
	unsolicited atomic.Int64
}

func (c *logCounter) Write(p []byte) (int, error) {
	if bytes.Contains(p, unsolicitedMarker) {
		c.unsolicited.Add(1)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.w.Write(p)
}

// captureStdLog routes the standard logger through a logCounter until the
// returned restore is called.
func captureStdLog(w io.Writer) (*logCounter, func()) {
	c := &logCounter{w: w}
	prev := log.Writer()
	log.SetOutput(c)
	return c, func() { log.SetOutput(prev) }
}
