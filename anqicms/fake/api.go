package fake

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

const jsonType = "application/json; charset=utf-8"

// AnqiCMS answer codes.
const (
	CodeOK       = 0
	CodeError    = -1
	CodeNotLogin = 1001
	CodeNoAccess = 1002
)

// texts holds each msg in Chinese (AnqiCMS's default) and English.
var texts = map[string][2]string{
	"notLogin": {"请先登录", "Please log in first"},
	"noAccess": {"无权操作", "No access"},
	"notFound": {"订单不存在", "order not found"},
	"badParam": {"参数错误: %s", "invalid parameter: %s"},
	"badBody":  {"请求参数错误", "invalid request body"},
	"badLogin": {"用户名或密码错误", "incorrect user name or password"},
}

type answer struct {
	Code  int    `json:"code"`
	Msg   string `json:"msg"`
	Data  any    `json:"data"`
	Total *int   `json:"total,omitempty"`
}

type apiRequest struct {
	w     http.ResponseWriter
	r     *http.Request
	query url.Values
	site  int
	user  *User // a copy; nil when anonymous
	en    bool
}

func (q *apiRequest) ok(data any) answer { return answer{Code: CodeOK, Data: data} }

func (q *apiRequest) list(data any, total int) answer {
	return answer{Code: CodeOK, Data: data, Total: &total}
}

func (q *apiRequest) fail(code int, key string, args ...any) answer {
	t := texts[key][0]
	if q.en {
		t = texts[key][1]
	}
	return answer{Code: code, Msg: fmt.Sprintf(t, args...)}
}

type route struct {
	method   string
	needUser bool
	handle   func(*Server, *apiRequest) answer
}

var routes = map[string]route{
	"/api/login":                      {http.MethodPost, false, (*Server).login},
	"/api/communication/orders":       {http.MethodGet, true, (*Server).listOrders},
	"/api/communication/order/create": {http.MethodPost, true, (*Server).createOrder},
	"/api/communication/order/detail": {http.MethodGet, true, (*Server).orderDetail},
	"/api/communication/order/update": {http.MethodPost, true, (*Server).updateOrder},
	"/api/communication/order/accept": {http.MethodPost, true, (*Server).acceptOrder},
	"/api/communication/messages":     {http.MethodGet, true, (*Server).listMessages},
	"/api/communication/message/send": {http.MethodPost, true, (*Server).sendMessage},
}

func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	p := routePath(r)
	switch {
	case strings.HasPrefix(p, "/api/"):
		s.serveAPI(w, r)
	case strings.HasPrefix(p, "/system/api/"):
		s.serveAdmin(w, r)
	case p == "/__echo" || strings.HasPrefix(p, "/__echo/"):
		serveEcho(w, r)
	case p == "/__raw" || strings.HasPrefix(p, "/__raw/"):
		serveRaw(w, r)
	case strings.HasPrefix(p, "/__status/"):
		serveStatus(w, r)
	case p == "/__big":
		serveBig(w, r)
	case p == "/__sleep":
		s.serveSleep(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	if langRedirect(w, r) {
		return
	}
	q := &apiRequest{w: w, r: r, query: r.URL.Query(), en: english(r)}
	q.site = s.siteOf(r, q.query)
	q.user = s.authenticate(w, r, q.site)
	if r.Method == http.MethodOptions {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	rt, ok := routes[routePath(r)]
	if !ok || rt.method != r.Method {
		// Iris, AnqiCMS's router, answers a wrong method like an unknown path.
		http.NotFound(w, r)
		return
	}
	var a answer
	if rt.needUser && q.user == nil {
		a = q.fail(CodeNotLogin, "notLogin")
	} else {
		a = s.handle(rt, q)
	}
	writeAnswer(w, a)
}

func english(r *http.Request) bool {
	lang := r.Header.Get("Accept-Language")
	if c, err := r.Cookie("lang"); err == nil && c.Value != "" {
		lang = c.Value
	}
	return strings.HasPrefix(strings.ToLower(lang), "en")
}

func (s *Server) siteOf(r *http.Request, query url.Values) int {
	if id, err := strconv.Atoi(query.Get("site_id")); err == nil && id > 0 {
		return id
	}
	host := r.Header.Get("X-Host")
	if host == "" {
		host = r.Host
	}
	// Case-sensitive, as AnqiCMS matches a site's host:
	// SITE2.EXAMPLE.TEST is not site2.example.test (it falls back to site 1).
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if id, ok := s.opts.SiteHosts[strings.Trim(host, "[]")]; ok {
		return id
	}
	return 1
}

// authenticate returns the request's user, or nil: a missing, invalid or
// expired token, or one for a user of another site, means anonymous.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request, site int) *User {
	tok := r.Header.Get("token")
	if tok == "" {
		if c, err := r.Cookie("token"); err == nil {
			tok = c.Value
		}
	}
	if tok == "" {
		return nil
	}
	id, expiry, ok := s.parseToken(tok, site)
	if !ok {
		return nil
	}
	s.mu.RLock()
	u, ok := s.users[id]
	var user User
	if ok {
		user = *u
	}
	s.mu.RUnlock()
	if !ok || user.SiteID != site {
		return nil
	}
	now := s.opts.Now()
	if expiry-now.Unix() < int64(time.Hour/time.Second) {
		w.Header().Set("Update-Token", s.sign(id, site, now.Add(24*time.Hour)))
	}
	return &user
}

// own finds an order of the request's site that belongs to its user; s.mu
// must be held.
func (s *Server) own(q *apiRequest, id int64) (*Order, *answer) {
	o, ok := s.orders[id]
	if !ok || o.SiteID != q.site {
		a := q.fail(CodeError, "notFound")
		return nil, &a
	}
	if o.UserID != q.user.ID {
		a := q.fail(CodeNoAccess, "noAccess")
		return nil, &a
	}
	return o, nil
}

func (s *Server) login(q *apiRequest) answer {
	var p struct {
		UserName string `json:"user_name"`
		Password string `json:"password"`
	}
	if err := readJSON(q.r, &p); err != nil {
		return q.fail(CodeError, "badBody")
	}
	name, pass := p.UserName, p.Password
	var user *User
	s.mu.RLock()
	for _, u := range s.users {
		if u.SiteID == q.site && u.Name == name && u.Password == pass {
			c := *u
			user = &c
			break
		}
	}
	s.mu.RUnlock()
	if user == nil || name == "" {
		return q.fail(CodeError, "badLogin")
	}
	tok := s.sign(user.ID, q.site, s.opts.Now().Add(30*24*time.Hour))
	q.w.Header().Add("Set-Cookie", "token="+tok+"; Path=/; HttpOnly")
	return q.ok(struct {
		ID       int64  `json:"id"`
		UserName string `json:"user_name"`
		Token    string `json:"token"`
	}{user.ID, user.Name, tok})
}

// page returns the bounds of page current (from 1) of size items out of n.
func page(query url.Values, n int) (from, to int) {
	current, err := strconv.Atoi(query.Get("current"))
	if err != nil || current < 1 {
		current = 1
	}
	size, err := strconv.Atoi(query.Get("page_size"))
	if err != nil || size < 1 {
		size = 20
	}
	size = min(size, 1000)
	current = min(current, n+1) // keeps (current-1)*size from overflowing
	from = min((current-1)*size, n)
	return from, min(from+size, n)
}

func (s *Server) listOrders(q *apiRequest) answer {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var mine []*Order
	for _, o := range s.orders {
		if o.SiteID == q.site && o.UserID == q.user.ID {
			mine = append(mine, o)
		}
	}
	slices.SortFunc(mine, func(a, b *Order) int { return cmp.Compare(b.ID, a.ID) })
	from, to := page(q.query, len(mine))
	b, err := json.Marshal(append([]*Order{}, mine[from:to]...))
	if err != nil {
		return q.fail(CodeError, "badBody")
	}
	return q.list(json.RawMessage(b), len(mine))
}

func (s *Server) orderDetail(q *apiRequest) answer {
	id, err := strconv.ParseInt(q.query.Get("id"), 10, 64)
	if err != nil {
		return q.fail(CodeError, "badParam", "id")
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	o, a := s.own(q, id)
	if a != nil {
		return *a
	}
	// Encoded under the read lock: no copy, and writers wait only briefly.
	b, err := json.Marshal(o)
	if err != nil {
		return q.fail(CodeError, "badBody")
	}
	return q.ok(json.RawMessage(b))
}

func (s *Server) createOrder(q *apiRequest) answer {
	var p struct {
		ArchiveID  bodyID         `json:"archive_id"`
		Title      string         `json:"title"`
		Content    string         `json:"content"`
		Phone      string         `json:"phone"`
		Images     []string       `json:"images"`
		OrderExtra map[string]any `json:"order_extra"`
	}
	if err := readJSON(q.r, &p); err != nil {
		return q.fail(CodeError, "badBody")
	}
	return q.ok(s.AddOrder(Order{
		UserID:     q.user.ID,
		SiteID:     q.site,
		ArchiveID:  int64(p.ArchiveID),
		Title:      p.Title,
		Content:    p.Content,
		Phone:      p.Phone,
		Images:     p.Images,
		OrderExtra: p.OrderExtra,
		User:       OrderUser{ID: q.user.ID, UserName: q.user.Name},
		Status:     StatusPending,
	}))
}

func (s *Server) updateOrder(q *apiRequest) answer {
	// Absent or null fields leave the order's value alone.
	var p struct {
		ID         bodyID         `json:"id"`
		Title      *string        `json:"title"`
		Content    *string        `json:"content"`
		OrderExtra map[string]any `json:"order_extra"`
	}
	if err := readJSON(q.r, &p); err != nil {
		return q.fail(CodeError, "badBody")
	}
	return s.changeOwn(q, int64(p.ID), func(o *Order) {
		if p.Title != nil {
			o.Title = *p.Title
		}
		if p.Content != nil {
			o.Content = *p.Content
		}
		if p.OrderExtra != nil {
			o.OrderExtra = p.OrderExtra
		}
	})
}

func (s *Server) acceptOrder(q *apiRequest) answer {
	var p struct {
		ID bodyID `json:"id"`
	}
	if err := readJSON(q.r, &p); err != nil {
		return q.fail(CodeError, "badBody")
	}
	return s.changeOwn(q, int64(p.ID), func(o *Order) {
		o.Status = StatusAccepted
		if o.OrderID == "" {
			o.OrderID = orderNumber(o.CreatedTime, o.ID)
		}
	})
}

// changeOwn applies change to the caller's order id and answers the changed
// order.
func (s *Server) changeOwn(q *apiRequest, id int64, change func(*Order)) answer {
	if id <= 0 {
		return q.fail(CodeError, "badParam", "id")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	o, a := s.own(q, id)
	if a != nil {
		return *a
	}
	change(o)
	return q.ok(o.clone())
}

func (s *Server) listMessages(q *apiRequest) answer {
	id, err := strconv.ParseInt(q.query.Get("comm_order_id"), 10, 64)
	if err != nil {
		return q.fail(CodeError, "badParam", "comm_order_id")
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	o, a := s.own(q, id)
	if a != nil {
		return *a
	}
	from, to := page(q.query, len(o.Messages))
	b, err := json.Marshal(append([]Message{}, o.Messages[from:to]...))
	if err != nil {
		return q.fail(CodeError, "badBody")
	}
	return q.list(json.RawMessage(b), len(o.Messages))
}

func (s *Server) sendMessage(q *apiRequest) answer {
	var p struct {
		CommOrderID bodyID `json:"comm_order_id"`
		SenderID    bodyID `json:"sender_id"`
		SenderName  string `json:"sender_name"`
		MessageType string `json:"message_type"`
		Content     string `json:"content"`
	}
	if err := readJSON(q.r, &p); err != nil {
		return q.fail(CodeError, "badBody")
	}
	id := int64(p.CommOrderID)
	if id <= 0 {
		return q.fail(CodeError, "badParam", "comm_order_id")
	}
	if p.Content == "" {
		return q.fail(CodeError, "badParam", "content")
	}
	m := Message{
		SenderID:    cmp.Or(int64(p.SenderID), q.user.ID),
		SenderType:  "user",
		SenderName:  cmp.Or(p.SenderName, q.user.Name),
		MessageType: cmp.Or(p.MessageType, "text"),
		Content:     p.Content,
	}
	now := s.opts.Now().Unix()
	s.mu.Lock()
	defer s.mu.Unlock()
	o, a := s.own(q, id)
	if a != nil {
		return *a
	}
	if s.db != nil {
		// The database numbers the message, as AnqiCMS's does: admin
		// replies go straight into the table, so the next id known in
		// memory may already be taken, and the store's insert would then
		// quietly keep the admin's row. Stored now, under the write lock
		// handle holds; the store that follows finds the row there.
		m.CommOrderID, m.CreatedTime = o.ID, now
		if err := insertMessage(q.r.Context(), s.db.db, &m); err != nil {
			return answer{Code: CodeError, Msg: err.Error()}
		}
	}
	s.fillMessage(&m, o.ID, now)
	o.Messages = append(o.Messages, m)
	return q.ok(m)
}

// readJSON binds a request body the way AnqiCMS does: Iris's ReadJSON
// ignores Content-Type and runs encoding/json's Unmarshal into the route's
// struct. So keys match case-insensitively, the last duplicate wins, a null
// leaves a field alone, and a form body (or anything else that is not one
// JSON value) is an error, which AnqiCMS answers with code -1.
func readJSON(r *http.Request, v any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return err
	}
	return json.Unmarshal(body, v)
}

// bodyID is an order, user or archive id in a request body. AnqiCMS's
// open-source request structs bind ids as plain integers, but the
// communication module is not open source; the fake also takes a string
// holding a base-10 integer ("308", "\u0033\u0030\u0038", "+308"), so tests
// see a write that names its order that way applied, and anqi-edge must
// invalidate it. Anything else (a float, a bool, "abc") fails the whole
// body, as a type mismatch does in encoding/json.
type bodyID int64

// UnmarshalJSON implements json.Unmarshaler.
func (id *bodyID) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil // encoding/json's convention: null leaves the value alone
	}
	var s string
	if len(b) > 0 && b[0] == '"' {
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
	} else {
		s = string(b)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return fmt.Errorf("id %s: %w", b, err)
	}
	*id = bodyID(n)
	return nil
}

// writeAnswer sends a as AnqiCMS sends its envelope: JSON, HTTP 200.
func writeAnswer(w http.ResponseWriter, a answer) {
	b, err := json.Marshal(a)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", jsonType)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
}
