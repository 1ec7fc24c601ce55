package fake

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// AddUser adds or replaces a user. ID 0 takes the next free id; SiteID 0
// means site 1.
func (s *Server) AddUser(u User) {
	if u.SiteID == 0 {
		u.SiteID = 1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if u.ID == 0 {
		u.ID = s.lastUser + 1
	}
	s.lastUser = max(s.lastUser, u.ID)
	s.users[u.ID] = &u
}

// AddOrder stores a copy of o, filling what the caller left zero: ID (next
// of a per-server sequence), CreatedTime, OrderID, SiteID and User (from the
// order's user), and the ids of its messages. It returns the stored copy.
func (s *Server) AddOrder(o Order) Order {
	return s.AddOrders([]Order{o})[0]
}

// AddOrders adds each order as AddOrder does and returns the stored
// copies, in order. In database mode they are written in one transaction
// of multi-row inserts, so seeding thousands of orders takes a second,
// not one round trip per row.
func (s *Server) AddOrders(orders []Order) []Order {
	stored := make([]Order, len(orders))
	for i, o := range orders {
		stored[i] = s.addOrder(o)
	}
	if s.db != nil {
		s.dbAddOrders(stored)
	}
	return stored
}

func (s *Server) addOrder(o Order) Order {
	now := s.opts.Now().Unix()
	s.mu.Lock()
	defer s.mu.Unlock()
	if o.ID == 0 {
		o.ID = s.lastOrder + 1
	}
	s.lastOrder = max(s.lastOrder, o.ID)
	if o.CreatedTime == 0 {
		o.CreatedTime = now
	}
	if o.OrderID == "" {
		o.OrderID = orderNumber(o.CreatedTime, o.ID)
	}
	u := s.users[o.UserID]
	if o.SiteID == 0 {
		o.SiteID = 1
		if u != nil {
			o.SiteID = u.SiteID
		}
	}
	if o.User.ID == 0 && u != nil {
		o.User = OrderUser{ID: u.ID, UserName: u.Name}
	}
	stored := o.clone()
	for i := range stored.Messages {
		s.fillMessage(&stored.Messages[i], o.ID, now)
	}
	s.orders[o.ID] = &stored
	return stored.clone()
}

// fillMessage completes m for order id; s.mu must be held for writing.
func (s *Server) fillMessage(m *Message, orderID, now int64) {
	if m.ID == 0 {
		m.ID = s.lastMsg + 1
	}
	s.lastMsg = max(s.lastMsg, m.ID)
	m.CommOrderID = orderID
	if m.CreatedTime == 0 {
		m.CreatedTime = now
	}
	if m.SenderType == "" {
		m.SenderType = "admin"
	}
	if m.MessageType == "" {
		m.MessageType = "text"
	}
}

// Order returns a deep copy of the order's current state (in database
// mode, as the database holds it now).
func (s *Server) Order(id int64) (Order, bool) {
	if s.db != nil {
		o, ok, err := s.reloadOrder(context.Background(), id)
		mustStore(err)
		return o, ok
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	o, ok := s.orders[id]
	if !ok {
		return Order{}, false
	}
	return o.clone(), true
}

// AppendMessage adds a message to an order behind the API's back, as the
// admin panel would. Empty SenderType means "admin", empty MessageType
// "text". It returns the stored message, or the zero Message if the order
// does not exist. In database mode it writes only to the database.
func (s *Server) AppendMessage(orderID int64, m Message) Message {
	if s.db != nil {
		m, err := s.dbAppendMessage(context.Background(), orderID, m)
		if errors.Is(err, errNoOrder) {
			return Message{}
		}
		mustStore(err)
		return m
	}
	now := s.opts.Now().Unix()
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.orders[orderID]
	if !ok {
		return Message{}
	}
	s.fillMessage(&m, orderID, now)
	o.Messages = append(o.Messages, m)
	return m
}

// AppendMessages adds many messages behind the API's back, each to the
// order its CommOrderID names, as AppendMessage does one; messages to
// orders that do not exist are dropped. It returns how many were stored.
// In database mode they are written in one transaction of multi-row
// inserts, numbered by the database.
func (s *Server) AppendMessages(ms []Message) int {
	if s.db != nil {
		n, err := s.dbAppendMessages(context.Background(), ms)
		mustStore(err)
		return n
	}
	n := 0
	for _, m := range ms {
		if s.AppendMessage(m.CommOrderID, m).ID != 0 {
			n++
		}
	}
	return n
}

// SetOrderStatus changes an order's status as the admin panel would (in
// database mode, only in the database).
func (s *Server) SetOrderStatus(orderID int64, status int) {
	if s.db != nil {
		if err := s.dbUpdateOrder(context.Background(), orderID, map[string]any{"status": status}); !errors.Is(err, errNoOrder) {
			mustStore(err)
		}
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if o, ok := s.orders[orderID]; ok {
		o.Status = status
	}
}

// Token returns a user token exactly as AnqiCMS issues one: HS256 over the
// claims {"userId": "<id>", "t": "<unix expiry>"} (both strings, no exp),
// keyed with the user's site TokenSecret+"-user-token". A negative ttl
// gives an expired token. Unknown users get a site 1 token.
func (s *Server) Token(userID int64, ttl time.Duration) string {
	site := 1
	s.mu.RLock()
	if u, ok := s.users[userID]; ok {
		site = u.SiteID
	}
	s.mu.RUnlock()
	return s.sign(userID, site, s.opts.Now().Add(ttl))
}

func (s *Server) sign(userID int64, site int, expiry time.Time) string {
	t := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"userId": strconv.FormatInt(userID, 10),
		"t":      strconv.FormatInt(expiry.Unix(), 10),
	})
	tok, err := t.SignedString(s.userKey(site))
	if err != nil {
		panic(err) // HMAC with a []byte key cannot fail
	}
	return tok
}

// parseToken verifies a user token the way AnqiCMS does and returns its
// user id and expiry; ok is false for anything invalid or expired.
func (s *Server) parseToken(tok string, site int) (userID, expiry int64, ok bool) {
	t, err := jwt.Parse(tok, func(*jwt.Token) (any, error) { return s.userKey(site), nil },
		jwt.WithValidMethods([]string{"HS256", "HS384", "HS512"}),
		jwt.WithTimeFunc(s.opts.Now))
	if err != nil {
		return 0, 0, false
	}
	claims, _ := t.Claims.(jwt.MapClaims)
	id, _ := claims["userId"].(string)
	exp, _ := claims["t"].(string)
	userID, err1 := strconv.ParseInt(id, 10, 64)
	expiry, err2 := strconv.ParseInt(exp, 10, 64)
	if err1 != nil || err2 != nil || expiry < s.opts.Now().Unix() {
		return 0, 0, false
	}
	return userID, expiry, true
}

func (s *Server) userKey(site int) []byte {
	secret, ok := s.opts.SiteSecrets[site]
	if !ok {
		secret = s.opts.TokenSecret
	}
	return []byte(secret + "-user-token")
}
