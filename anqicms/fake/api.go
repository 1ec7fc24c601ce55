package fake

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
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
	b, err := json.Marshal(a)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", jsonType)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
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
	host = strings.ToLower(host)
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
	p, err := readParams(q.r)
	if err != nil {
		return q.fail(CodeError, "badBody")
	}
	name, pass := p.str("user_name"), p.str("password")
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
	p, err := readParams(q.r)
	if err != nil {
		return q.fail(CodeError, "badBody")
	}
	return q.ok(s.AddOrder(Order{
		UserID:     q.user.ID,
		SiteID:     q.site,
		ArchiveID:  p.num("archive_id"),
		Title:      p.str("title"),
		Content:    p.str("content"),
		Phone:      p.str("phone"),
		Images:     p.strs("images"),
		OrderExtra: p.object("order_extra"),
		User:       OrderUser{ID: q.user.ID, UserName: q.user.Name},
		Status:     StatusPending,
	}))
}

func (s *Server) updateOrder(q *apiRequest) answer {
	return s.changeOwn(q, "id", func(p params, o *Order) {
		if p.has("title") {
			o.Title = p.str("title")
		}
		if p.has("content") {
			o.Content = p.str("content")
		}
		if p.has("order_extra") {
			o.OrderExtra = p.object("order_extra")
		}
	})
}

func (s *Server) acceptOrder(q *apiRequest) answer {
	return s.changeOwn(q, "id", func(_ params, o *Order) {
		o.Status = StatusAccepted
		if o.OrderID == "" {
			o.OrderID = orderNumber(o.CreatedTime, o.ID)
		}
	})
}

// changeOwn applies change to the caller's order named by the idKey body
// parameter and answers the changed order.
func (s *Server) changeOwn(q *apiRequest, idKey string, change func(params, *Order)) answer {
	p, err := readParams(q.r)
	if err != nil {
		return q.fail(CodeError, "badBody")
	}
	id, err := p.id(idKey)
	if err != nil {
		return q.fail(CodeError, "badParam", idKey)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	o, a := s.own(q, id)
	if a != nil {
		return *a
	}
	change(p, o)
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
	p, err := readParams(q.r)
	if err != nil {
		return q.fail(CodeError, "badBody")
	}
	id, err := p.id("comm_order_id")
	if err != nil {
		return q.fail(CodeError, "badParam", "comm_order_id")
	}
	content := p.str("content")
	if content == "" {
		return q.fail(CodeError, "badParam", "content")
	}
	m := Message{
		SenderID:    cmp.Or(p.num("sender_id"), q.user.ID),
		SenderType:  "user",
		SenderName:  cmp.Or(p.str("sender_name"), q.user.Name),
		MessageType: cmp.Or(p.str("message_type"), "text"),
		Content:     content,
	}
	now := s.opts.Now().Unix()
	s.mu.Lock()
	defer s.mu.Unlock()
	o, a := s.own(q, id)
	if a != nil {
		return *a
	}
	s.fillMessage(&m, o.ID, now)
	o.Messages = append(o.Messages, m)
	return q.ok(m)
}

// params reads POST parameters from a JSON body or, leniently, a form.
type params struct {
	json map[string]json.RawMessage
	form url.Values
}

func readParams(r *http.Request) (params, error) {
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch ct {
	case "application/x-www-form-urlencoded", "multipart/form-data":
		if err := r.ParseMultipartForm(1 << 20); err != nil && !errors.Is(err, http.ErrNotMultipart) {
			return params{}, err
		}
		return params{form: r.PostForm}, nil
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return params{}, err
	}
	p := params{json: map[string]json.RawMessage{}}
	if len(bytes.TrimSpace(body)) == 0 {
		return p, nil
	}
	// AnqiCMS binds JSON into Go structs: keys match case-insensitively and
	// the last match wins. Keys are stored lower-cased, in document order.
	dec := json.NewDecoder(bytes.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return p, errors.New("body is not a JSON object")
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return p, err
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return p, err
		}
		k, _ := t.(string)
		p.json[strings.ToLower(k)] = v
	}
	return p, nil
}

func (p params) has(k string) bool {
	if p.form != nil {
		_, ok := p.form[k]
		return ok
	}
	_, ok := p.json[strings.ToLower(k)]
	return ok
}

// str accepts a JSON string or number.
func (p params) str(k string) string {
	if p.form != nil {
		return p.form.Get(k)
	}
	raw := p.json[strings.ToLower(k)]
	var v string
	if json.Unmarshal(raw, &v) == nil {
		return v
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return n.String()
	}
	return ""
}

// id parses a required integer parameter; JSON may carry it as a string.
func (p params) id(k string) (int64, error) {
	if p.form == nil {
		var n int64
		if json.Unmarshal(p.json[strings.ToLower(k)], &n) == nil {
			return n, nil
		}
	}
	return strconv.ParseInt(p.str(k), 10, 64)
}

func (p params) num(k string) int64 {
	n, _ := p.id(k)
	return n
}

func (p params) strs(k string) []string {
	if p.form != nil {
		return append(p.form[k], p.form[k+"[]"]...)
	}
	var v []string
	json.Unmarshal(p.json[strings.ToLower(k)], &v)
	return v
}

// object accepts a JSON object, or in a form, its JSON text.
func (p params) object(k string) map[string]any {
	raw := p.json[strings.ToLower(k)]
	if p.form != nil {
		raw = []byte(p.form.Get(k))
	}
	var v map[string]any
	json.Unmarshal(raw, &v)
	return v
}
