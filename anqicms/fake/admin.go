package fake

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
)

// The admin side, as the AnqiCMS admin panel changes an order: a staff
// reply, a quote, a status change. In database mode (NewWithDB) these write
// only to the database, never through the API's in-memory state, so the
// only way anqi-edge can learn of them is the database's change stream. In
// memory mode they change the memory, like AppendMessage and
// SetOrderStatus. They take JSON (or form) bodies, answer AnqiCMS's
// envelope, and are not authenticated: the fake is for tests and demos.
const (
	AdminReplyPath  = "/system/api/communication/message/send" // comm_order_id, content[, message_type, sender_name, sender_id]
	AdminQuotePath  = "/system/api/communication/order/quote"  // id, quote_price, quote_content: status becomes 2 (quoted)
	AdminStatusPath = "/system/api/communication/order/status" // id, status (-1, 0..4)
)

var errNoOrder = errors.New("order not found")

var adminRoutes = map[string]func(*Server, *apiRequest, params) answer{
	AdminReplyPath:  (*Server).adminReply,
	AdminQuotePath:  (*Server).adminQuote,
	AdminStatusPath: (*Server).adminStatus,
}

func (s *Server) serveAdmin(w http.ResponseWriter, r *http.Request) {
	handle, ok := adminRoutes[r.URL.Path]
	if !ok || r.Method != http.MethodPost {
		http.NotFound(w, r)
		return
	}
	q := &apiRequest{w: w, r: r, query: r.URL.Query(), en: english(r)}
	q.site = s.siteOf(r, q.query)
	// The admin panel's API, like AnqiCMS's, decodes any body that is JSON
	// as JSON whatever its Content-Type, so `curl -d '{...}'` works.
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	if bytes.HasPrefix(bytes.TrimSpace(body), []byte("{")) {
		r.Header.Set("Content-Type", "application/json")
	}
	var a answer
	if p, err := readParams(r); err != nil {
		a = q.fail(CodeError, "badBody")
	} else {
		a = handle(s, q, p)
	}
	b, err := json.Marshal(a)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", jsonType)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
}

func (s *Server) adminAnswer(q *apiRequest, err error, data any) answer {
	switch {
	case errors.Is(err, errNoOrder):
		return q.fail(CodeError, "notFound")
	case err != nil:
		return answer{Code: CodeError, Msg: err.Error()}
	}
	return q.ok(data)
}

func (s *Server) adminReply(q *apiRequest, p params) answer {
	id, err := p.id("comm_order_id")
	if err != nil {
		return q.fail(CodeError, "badParam", "comm_order_id")
	}
	content := p.str("content")
	if content == "" {
		return q.fail(CodeError, "badParam", "content")
	}
	m := Message{
		SenderID:    p.num("sender_id"),
		SenderType:  "admin",
		SenderName:  p.str("sender_name"),
		MessageType: p.str("message_type"),
		Content:     content,
	}
	if m.SenderName == "" {
		m.SenderName = "admin"
	}
	if s.db != nil {
		m, err = s.dbAppendMessage(q.r.Context(), id, m)
		return s.adminAnswer(q, err, m)
	}
	if _, ok := s.Order(id); !ok {
		return s.adminAnswer(q, errNoOrder, nil)
	}
	return q.ok(s.AppendMessage(id, m))
}

func (s *Server) adminQuote(q *apiRequest, p params) answer {
	id, err := p.id("id")
	if err != nil {
		return q.fail(CodeError, "badParam", "id")
	}
	price := p.str("quote_price")
	if price == "" {
		return q.fail(CodeError, "badParam", "quote_price")
	}
	set := map[string]any{"quote_price": price, "quote_content": p.str("quote_content"), "status": StatusQuoted}
	return s.adminSet(q, id, set)
}

func (s *Server) adminStatus(q *apiRequest, p params) answer {
	id, err := p.id("id")
	if err != nil {
		return q.fail(CodeError, "badParam", "id")
	}
	st, err := p.id("status")
	if err != nil || st < StatusCancelled || st > StatusRejected {
		return q.fail(CodeError, "badParam", "status")
	}
	return s.adminSet(q, id, map[string]any{"status": int(st)})
}

// adminSet changes an order's columns (status, quote_price, quote_content)
// and answers the order as it now is.
func (s *Server) adminSet(q *apiRequest, id int64, set map[string]any) answer {
	if s.db != nil {
		if err := s.dbUpdateOrder(q.r.Context(), id, set); err != nil {
			return s.adminAnswer(q, err, nil)
		}
		o, ok, err := s.orderFromDB(q.r.Context(), id)
		if err == nil && !ok {
			err = errNoOrder
		}
		return s.adminAnswer(q, err, o)
	}
	s.mu.Lock()
	o, ok := s.orders[id]
	if ok {
		for k, v := range set {
			switch k {
			case "status":
				o.Status = v.(int)
			case "quote_price":
				o.QuotePrice = v.(string)
			case "quote_content":
				o.QuoteContent = v.(string)
			}
		}
	}
	s.mu.Unlock()
	if !ok {
		return s.adminAnswer(q, errNoOrder, nil)
	}
	o2, _ := s.Order(id)
	return q.ok(o2)
}

// orderFromDB reads one order from the database without touching memory.
func (s *Server) orderFromDB(ctx context.Context, id int64) (Order, bool, error) {
	orders, err := s.db.query(ctx, "id = ?", id)
	if err != nil || len(orders) == 0 {
		return Order{}, false, err
	}
	return *orders[0], true, nil
}
