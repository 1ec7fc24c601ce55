package fake

import (
	"database/sql"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"anqi-edge/internal/mariadbtest"
)

// startDB serves a fake in database mode on a fresh MariaDB, seeded like
// start: user1 owns orders 1 and 2, user2 orders 3 and 4.
func startDB(t *testing.T) (*Server, string, *sql.DB) {
	t.Helper()
	m := mariadbtest.Start(t)
	m.Exec(t, "CREATE DATABASE anqicms")
	db := m.Open(t, "root", "", "anqicms")
	s, err := NewWithDB(Options{}, db)
	if err != nil {
		t.Fatal(err)
	}
	s.Seed(2, 2)
	base, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, base, db
}

func count(t *testing.T, db *sql.DB, q string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRow(q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

func TestDBMode_CustomerAPIReadsAndWritesTheDatabase(t *testing.T) {
	s, base, db := startDB(t)
	if n := count(t, db, "SELECT COUNT(*) FROM communication_orders"); n != 4 {
		t.Fatalf("seeded %d orders into the database, want 4", n)
	}
	tok := s.Token(1, 2*time.Hour)
	o := decode[Order](t, detail(t, base, "2", tok).Data)
	if o.ID != 2 || o.UserID != 1 || len(o.Messages) != 2 || o.OrderExtra["size"] != "M" || len(o.Images) != 1 {
		t.Fatalf("detail from the database: %+v", o)
	}

	_, e := api(t, "POST", base+"/api/communication/message/send", `{"comm_order_id":1,"content":"Is it ready?"}`, "token", tok)
	if e.Code != 0 || count(t, db, "SELECT COUNT(*) FROM communication_messages WHERE comm_order_id = 1 AND content = 'Is it ready?' AND sender_type = 'user'") != 1 {
		t.Fatalf("customer message not stored: %d %s", e.Code, e.Data)
	}
	_, e = api(t, "POST", base+"/api/communication/order/update", `{"id":1,"title":"Pie"}`, "token", tok)
	if e.Code != 0 || count(t, db, "SELECT COUNT(*) FROM communication_orders WHERE id = 1 AND title = 'Pie'") != 1 {
		t.Fatalf("update not stored: %d %s", e.Code, e.Data)
	}
	_, e = api(t, "POST", base+"/api/communication/order/create", `{"title":"Cake","order_extra":{"tier":2}}`, "token", tok)
	created := decode[Order](t, e.Data)
	if e.Code != 0 || created.ID != 5 || count(t, db, "SELECT COUNT(*) FROM communication_orders WHERE id = 5 AND user_id = 1") != 1 {
		t.Fatalf("create: %d %s", e.Code, e.Data)
	}
	_, e = api(t, "POST", base+"/api/communication/order/accept", `{"id":5}`, "token", tok)
	if e.Code != 0 || count(t, db, "SELECT COUNT(*) FROM communication_orders WHERE id = 5 AND status = 3") != 1 {
		t.Fatalf("accept: %d %s", e.Code, e.Data)
	}
	_, e = api(t, "POST", base+"/api/communication/order/update", `{"id":3,"title":"mine"}`, "token", tok)
	if e.Code != CodeNoAccess {
		t.Errorf("update of another user's order: code %d", e.Code)
	}

	// A change made in the database by anyone is what the API serves next.
	if _, err := db.Exec("UPDATE communication_orders SET title = 'Changed in SQL' WHERE id = 1"); err != nil {
		t.Fatal(err)
	}
	if o := decode[Order](t, detail(t, base, "1", tok).Data); o.Title != "Changed in SQL" || len(o.Messages) != 2 {
		t.Fatalf("detail after a direct SQL change: %+v", o)
	}
}

func TestDBMode_AdminEndpointsWriteOnlyTheDatabase(t *testing.T) {
	s, base, db := startDB(t)
	tok := s.Token(1, 2*time.Hour)
	detail(t, base, "1", tok) // memory now holds order 1
	msgs := count(t, db, "SELECT COUNT(*) FROM communication_messages")

	_, e := api(t, "POST", base+AdminReplyPath, `{"comm_order_id":1,"content":"Ready tomorrow"}`)
	m := decode[Message](t, e.Data)
	if e.Code != 0 || m.ID == 0 || m.SenderType != "admin" || m.CommOrderID != 1 {
		t.Fatalf("admin reply: %d %s", e.Code, e.Data)
	}
	if n := count(t, db, "SELECT COUNT(*) FROM communication_messages"); n != msgs+1 {
		t.Fatalf("%d messages in the database after the reply, want %d", n, msgs+1)
	}
	s.mu.RLock()
	inMemory := len(s.orders[1].Messages)
	s.mu.RUnlock()
	if inMemory != 1 {
		t.Fatalf("the admin reply reached the fake's memory (%d messages): it must go only to the database", inMemory)
	}
	o := decode[Order](t, detail(t, base, "1", tok).Data)
	if len(o.Messages) != 2 || o.Messages[1].Content != "Ready tomorrow" {
		t.Fatalf("customer does not see the admin reply: %+v", o.Messages)
	}

	_, e = api(t, "POST", base+AdminQuotePath, `{"id":1,"quote_price":"99.50","quote_content":"two tiers"}`)
	if q := decode[Order](t, e.Data); e.Code != 0 || q.Status != StatusQuoted || q.QuotePrice != "99.50" {
		t.Fatalf("quote: %d %s", e.Code, e.Data)
	}
	_, e = api(t, "POST", base+AdminStatusPath, `{"id":1,"status":-1}`)
	if q := decode[Order](t, e.Data); e.Code != 0 || q.Status != StatusCancelled || q.QuoteContent != "two tiers" {
		t.Fatalf("status: %d %s", e.Code, e.Data)
	}
	if o := decode[Order](t, detail(t, base, "1", tok).Data); o.Status != StatusCancelled || o.QuotePrice != "99.50" {
		t.Fatalf("customer view after quote and status: %+v", o)
	}
	for _, bad := range []struct{ path, body string }{
		{AdminReplyPath, `{"comm_order_id":99,"content":"x"}`},
		{AdminStatusPath, `{"id":1,"status":9}`},
		{AdminQuotePath, `{"id":1}`},
	} {
		if _, e := api(t, "POST", base+bad.path, bad.body); e.Code != CodeError {
			t.Errorf("%s %s: code %d, want -1", bad.path, bad.body, e.Code)
		}
	}
	// Go-side setters act on the database too.
	s.SetOrderStatus(2, StatusCommunicating)
	s.AppendMessage(2, Message{Content: "from Go"})
	if got, _ := s.Order(2); got.Status != StatusCommunicating || got.Messages[len(got.Messages)-1].Content != "from Go" {
		t.Fatalf("Order(2) after setters: %+v", got)
	}
}

func TestAdminEndpoints_InMemoryMode(t *testing.T) {
	s, base := start(t, Options{})
	_, e := api(t, "POST", base+AdminReplyPath, `{"comm_order_id":1,"content":"hi"}`)
	if e.Code != 0 {
		t.Fatalf("reply: %d %s", e.Code, e.Data)
	}
	_, e = api(t, "POST", base+AdminQuotePath, `{"id":1,"quote_price":"5"}`)
	if e.Code != 0 {
		t.Fatalf("quote: %d %s", e.Code, e.Data)
	}
	if o, _ := s.Order(1); o.Status != StatusQuoted || o.Messages[len(o.Messages)-1].Content != "hi" {
		t.Fatalf("order after admin changes: %+v", o)
	}
	// JSON labelled as a form (curl -d) is read as JSON, as AnqiCMS does.
	resp, err := http.Post(base+AdminStatusPath, "application/x-www-form-urlencoded", strings.NewReader(`{"id":1,"status":1}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if o, _ := s.Order(1); o.Status != StatusCommunicating {
		t.Fatalf("JSON body sent as a form: HTTP %d, status %d", resp.StatusCode, o.Status)
	}
	if resp, _ := send(t, "GET", base+AdminReplyPath, ""); resp.StatusCode != 404 {
		t.Errorf("GET on an admin route: %d, want 404", resp.StatusCode)
	}
}

// An admin reply takes the database's next message id; a customer's
// message sent afterwards must get its own, not be dropped as a duplicate
// of the admin's row while the send answers code 0.
func TestDBMode_CustomerMessageAfterAnAdminReplyToAnotherOrderIsStored(t *testing.T) {
	s, base, db := startDB(t)
	tok := s.Token(1, 2*time.Hour)
	detail(t, base, "1", tok) // memory knows user 1's orders and their message ids
	_, e := api(t, "POST", base+AdminReplyPath, `{"comm_order_id":3,"content":"to user 2"}`)
	admin := decode[Message](t, e.Data)
	if e.Code != 0 {
		t.Fatalf("admin reply: %d %s", e.Code, e.Data)
	}
	_, e = api(t, "POST", base+"/api/communication/message/send", `{"comm_order_id":1,"content":"from user 1"}`, "token", tok)
	sent := decode[Message](t, e.Data)
	if e.Code != 0 || sent.ID == admin.ID {
		t.Fatalf("send: code %d, id %d (the admin reply has %d)", e.Code, sent.ID, admin.ID)
	}
	if n := count(t, db, "SELECT COUNT(*) FROM communication_messages WHERE id = ? AND comm_order_id = 1 AND content = 'from user 1'", sent.ID); n != 1 {
		t.Fatalf("the customer's message %d is not in the database", sent.ID)
	}
	o := decode[Order](t, detail(t, base, "1", tok).Data)
	if last := o.Messages[len(o.Messages)-1]; last.ID != sent.ID || last.Content != "from user 1" {
		t.Fatalf("order 1's messages after the send: %+v", o.Messages)
	}
}

func TestDBMode_BulkSeedingStoresEveryOrderAndMessage(t *testing.T) {
	m := mariadbtest.Start(t)
	m.Exec(t, "CREATE DATABASE anqicms")
	db := m.Open(t, "root", "", "anqicms")
	s, err := NewWithDB(Options{}, db)
	if err != nil {
		t.Fatal(err)
	}
	_, orders := s.Seed(3000, 1) // more rows than one INSERT carries
	var ms []Message
	for _, o := range orders {
		for k := range 3 {
			ms = append(ms, Message{CommOrderID: o.ID, Content: fmt.Sprintf("note %d", k)})
		}
	}
	ms = append(ms, Message{CommOrderID: 999999, Content: "no such order"})
	if n := s.AppendMessages(ms); n != 3*len(orders) {
		t.Errorf("AppendMessages stored %d, want %d", n, 3*len(orders))
	}
	if n := count(t, db, "SELECT COUNT(*) FROM communication_orders"); n != 3000 {
		t.Errorf("%d orders in the database, want 3000", n)
	}
	// Seed gives every order one message and every second one a reply (here none: one order per user).
	if n := count(t, db, "SELECT COUNT(*) FROM communication_messages"); n != 3000+3*3000 {
		t.Errorf("%d messages in the database, want %d", n, 3000+3*3000)
	}
	o, ok := s.Order(orders[2999].ID)
	if !ok || len(o.Messages) != 4 || o.Messages[3].Content != "note 2" || o.Messages[3].SenderType != "admin" || o.Title != orders[2999].Title {
		t.Fatalf("last order as stored: %+v", o)
	}
}
