package fake

import (
	"fmt"
	"time"
)

// User is an AnqiCMS front-end user. IDs are unique across the whole fake
// (real AnqiCMS has one database per site) so Token can find the site.
type User struct {
	ID       int64  `json:"id"`
	Name     string `json:"user_name"`
	Password string `json:"-"`
	SiteID   int    `json:"-"` // 0 means site 1
}

// OrderUser is the user summary embedded in an order.
type OrderUser struct {
	ID       int64  `json:"id"`
	UserName string `json:"user_name"`
}

// Order is a communication custom order, encoded like AnqiCMS's order object.
type Order struct {
	ID             int64          `json:"id"`
	OrderID        string         `json:"order_id"`
	UserID         int64          `json:"user_id"`
	CreatedTime    int64          `json:"created_time"`
	ArchiveID      int64          `json:"archive_id"`
	Phone          string         `json:"phone"`
	Images         []string       `json:"images"`
	SketchImages   []string       `json:"sketch_images"`
	FinishedImages []string       `json:"finished_images"`
	Title          string         `json:"title"`
	Content        string         `json:"content"`
	EventDate      string         `json:"event_date"`
	Status         int            `json:"status"`
	AdminID        int64          `json:"admin_id"`
	QuotePrice     string         `json:"quote_price"`
	QuoteContent   string         `json:"quote_content"`
	OrderExtra     map[string]any `json:"order_extra"`
	OrderFields    []any          `json:"order_fields"`
	User           OrderUser      `json:"user"`
	Messages       []Message      `json:"messages"`
	Thumb          string         `json:"thumb"`
	SiteID         int            `json:"-"`
}

// Message is one entry of an order's communication record.
type Message struct {
	ID          int64  `json:"id"`
	CommOrderID int64  `json:"comm_order_id"`
	SenderID    int64  `json:"sender_id"`
	SenderType  string `json:"sender_type"` // user, admin or system
	SenderName  string `json:"sender_name"`
	MessageType string `json:"message_type"`
	Content     string `json:"content"`
	CreatedTime int64  `json:"created_time"`
}

// Order statuses as AnqiCMS numbers them.
const (
	StatusCancelled     = -1
	StatusPending       = 0
	StatusCommunicating = 1
	StatusQuoted        = 2
	StatusAccepted      = 3
	StatusRejected      = 4
)

// clone deep-copies o; the copy never encodes a slice or map as null.
func (o *Order) clone() Order {
	c := *o
	c.Images = cloneSlice(o.Images)
	c.SketchImages = cloneSlice(o.SketchImages)
	c.FinishedImages = cloneSlice(o.FinishedImages)
	c.Messages = cloneSlice(o.Messages)
	c.OrderFields = cloneAny(o.OrderFields).([]any)
	c.OrderExtra = cloneAny(o.OrderExtra).(map[string]any)
	return c
}

func cloneSlice[T any](s []T) []T {
	return append(make([]T, 0, len(s)), s...)
}

// cloneAny copies the containers JSON decoding produces; leaves are immutable.
func cloneAny(v any) any {
	switch v := v.(type) {
	case map[string]any:
		c := make(map[string]any, len(v))
		for k, e := range v {
			c[k] = cloneAny(e)
		}
		return c
	case []any:
		c := make([]any, len(v))
		for i, e := range v {
			c[i] = cloneAny(e)
		}
		return c
	}
	return v
}

// orderNumber is the order_id AnqiCMS-style: creation date plus the id.
func orderNumber(created, id int64) string {
	return fmt.Sprintf("%s%06d", time.Unix(created, 0).UTC().Format("20060102"), id)
}

// Seed adds users 1..nUsers ("user1"/"pass1", ...) on site 1, each with
// ordersPerUser orders; every order has a user message and every second one
// an admin reply. Content is deterministic; times come from Options.Now.
func (s *Server) Seed(nUsers, ordersPerUser int) ([]User, []Order) {
	var users []User
	var orders []Order // stored at the end, in one AddOrders
	for i := 1; i <= nUsers; i++ {
		u := User{ID: int64(i), Name: fmt.Sprintf("user%d", i), Password: fmt.Sprintf("pass%d", i), SiteID: 1}
		s.AddUser(u)
		users = append(users, u)
		for k := 1; k <= ordersPerUser; k++ {
			o := Order{
				UserID:     u.ID,
				SiteID:     1,
				ArchiveID:  int64(k),
				Phone:      fmt.Sprintf("1380000%04d", i),
				Images:     []string{fmt.Sprintf("https://example.com/uploads/u%d-%d.jpg", i, k)},
				Title:      fmt.Sprintf("Order %d of %s", k, u.Name),
				Content:    fmt.Sprintf("Please make item %d for %s.", k, u.Name),
				EventDate:  fmt.Sprintf("2026-%02d-%02d", 1+k%12, 1+i%28),
				Status:     (k - 1) % 3,
				OrderExtra: map[string]any{"size": "M", "color": "red"},
				Thumb:      fmt.Sprintf("https://example.com/uploads/thumb/u%d-%d.jpg", i, k),
				Messages: []Message{{
					SenderID: u.ID, SenderType: "user", SenderName: u.Name,
					MessageType: "text", Content: fmt.Sprintf("Hello, about order %d.", k),
				}},
			}
			if k%2 == 0 {
				o.Messages = append(o.Messages, Message{
					SenderID: 1, SenderType: "admin", SenderName: "admin",
					MessageType: "text", Content: "Thanks, we are on it.",
				})
			}
			orders = append(orders, o)
		}
	}
	return users, s.AddOrders(orders)
}
