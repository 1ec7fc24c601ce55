package fake

import (
	"context"
	"errors"
	"net/http"
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

// adminBody is every field the admin endpoints read, bound as AnqiCMS binds
// a body (readJSON: JSON whatever the Content-Type).
type adminBody struct {
	ID           bodyID `json:"id"`
	CommOrderID  bodyID `json:"comm_order_id"`
	Content      string `json:"content"`
	SenderID     int64  `json:"sender_id"`
	SenderName   string `json:"sender_name"`
	MessageType  string `json:"message_type"`
	QuotePrice   string `json:"quote_price"`
	QuoteContent string `json:"quote_content"`
	Status       *int   `json:"status"`
}

var adminRoutes = map[string]func(*Server, *apiRequest, adminBody) answer{
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
	// The admin panel's API, like AnqiCMS's, decodes the body as JSON
	// whatever its Content-Type, so `curl -d '{...}'` works.
	var a answer
	var p adminBody
	if err := readJSON(r, &p); err != nil {
		a = q.fail(CodeError, "badBody")
	} else {
		a = handle(s, q, p)
	}
	writeAnswer(w, a)
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

func (s *Server) adminReply(q *apiRequest, p adminBody) answer {
	id := int64(p.CommOrderID)
	if id <= 0 {
		return q.fail(CodeError, "badParam", "comm_order_id")
	}
	if p.Content == "" {
		return q.fail(CodeError, "badParam", "content")
	}
	m := Message{
		SenderID:    p.SenderID,
		SenderType:  "admin",
		SenderName:  p.SenderName,
		MessageType: p.MessageType,
		Content:     p.Content,
	}
	var err error
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

func (s *Server) adminQuote(q *apiRequest, p adminBody) answer {
	id := int64(p.ID)
	if id <= 0 {
		return q.fail(CodeError, "badParam", "id")
	}
	if p.QuotePrice == "" {
		return q.fail(CodeError, "badParam", "quote_price")
	}
	set := map[string]any{"quote_price": p.QuotePrice, "quote_content": p.QuoteContent, "status": StatusQuoted}
	return s.adminSet(q, id, set)
}

func (s *Server) adminStatus(q *apiRequest, p adminBody) answer {
	id := int64(p.ID)
	if id <= 0 {
		return q.fail(CodeError, "badParam", "id")
	}
	if p.Status == nil || *p.Status < StatusCancelled || *p.Status > StatusRejected {
		return q.fail(CodeError, "badParam", "status")
	}
	return s.adminSet(q, id, map[string]any{"status": *p.Status})
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
