package watch

import "sync"

// hub wakes the clients watching an order when it is invalidated,
// locally or on another replica. Each order with watchers has one channel;
// an invalidation closes it (waking every watcher at once) and the next
// subscriber gets a fresh one.
type hub struct {
	mu      sync.Mutex
	orders  map[int64]*orderWatch
	perID   map[[32]byte]int // watchers by identity digest
	total   int
	max     int
	maxPer  int
	closing chan struct{}
	closed  bool
}

type orderWatch struct {
	changed chan struct{}
	n       int
}

func newHub(max, maxPer int) *hub {
	return &hub{orders: map[int64]*orderWatch{}, perID: map[[32]byte]int{},
		max: max, maxPer: maxPer, closing: make(chan struct{})}
}

// slot is one admitted watcher; release it exactly once.
type slot struct {
	h     *hub
	order int64
	id    [32]byte
}

// admit reserves a slot for a watcher of order, or reports which limit
// refused it ("global" or "identity").
func (h *hub) admit(order int64, id [32]byte) (*slot, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.closed:
		return nil, "shutdown"
	case h.total >= h.max:
		return nil, "global"
	case h.perID[id] >= h.maxPer:
		return nil, "identity"
	}
	h.total++
	h.perID[id]++
	w := h.orders[order]
	if w == nil {
		w = &orderWatch{changed: make(chan struct{})}
		h.orders[order] = w
	}
	w.n++
	return &slot{h: h, order: order, id: id}, ""
}

// changed returns the channel that closes on order's next invalidation.
// Take it before reading the current state, so a change in between is not
// missed.
func (s *slot) changed() <-chan struct{} {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	return s.h.orders[s.order].changed
}

func (s *slot) release() {
	h := s.h
	h.mu.Lock()
	defer h.mu.Unlock()
	h.total--
	if h.perID[s.id]--; h.perID[s.id] <= 0 {
		delete(h.perID, s.id)
	}
	if w := h.orders[s.order]; w != nil {
		if w.n--; w.n <= 0 {
			delete(h.orders, s.order)
		}
	}
}

// notify wakes the watchers of order; order 0 wakes everyone (L1 was
// cleared, anything may have changed). It never blocks.
func (h *hub) notify(order int64) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	woken := 0
	wake := func(w *orderWatch) {
		close(w.changed)
		w.changed = make(chan struct{})
		woken += w.n
	}
	if order == 0 {
		for _, w := range h.orders {
			wake(w)
		}
		return woken
	}
	if w := h.orders[order]; w != nil {
		wake(w)
	}
	return woken
}

// shutdown ends every watch: long-polls answer 304, event streams end.
func (h *hub) shutdown() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.closed {
		h.closed = true
		close(h.closing)
	}
}

func (h *hub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.total
}
