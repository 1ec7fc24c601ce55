package fake

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"
)

// Schema creates the fake's tables, named as AnqiCMS's GORM conventions
// suggest (UPSTREAM.md "Database"): communication_orders (order id in id)
// and communication_messages (order id in comm_order_id). List and map
// fields are stored as JSON text.
const Schema = `
CREATE TABLE IF NOT EXISTS communication_orders (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  order_id VARCHAR(64) NOT NULL DEFAULT '',
  user_id BIGINT NOT NULL DEFAULT 0,
  site_id INT NOT NULL DEFAULT 1,
  user_name VARCHAR(64) NOT NULL DEFAULT '',
  created_time BIGINT NOT NULL DEFAULT 0,
  archive_id BIGINT NOT NULL DEFAULT 0,
  phone VARCHAR(32) NOT NULL DEFAULT '',
  images TEXT,
  sketch_images TEXT,
  finished_images TEXT,
  title VARCHAR(250) NOT NULL DEFAULT '',
  content TEXT,
  event_date VARCHAR(32) NOT NULL DEFAULT '',
  status INT NOT NULL DEFAULT 0,
  admin_id BIGINT NOT NULL DEFAULT 0,
  quote_price VARCHAR(32) NOT NULL DEFAULT '',
  quote_content TEXT,
  order_extra TEXT,
  order_fields TEXT,
  thumb VARCHAR(250) NOT NULL DEFAULT '',
  KEY idx_user (user_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE IF NOT EXISTS communication_messages (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  comm_order_id BIGINT UNSIGNED NOT NULL,
  sender_id BIGINT NOT NULL DEFAULT 0,
  sender_type VARCHAR(16) NOT NULL DEFAULT 'admin',
  sender_name VARCHAR(64) NOT NULL DEFAULT '',
  message_type VARCHAR(16) NOT NULL DEFAULT 'text',
  content TEXT,
  created_time BIGINT NOT NULL DEFAULT 0,
  KEY idx_order (comm_order_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`

// NewWithDB returns a Server that keeps its orders and messages in db (a
// MySQL/MariaDB pool whose DSN names the database), creating the tables if
// needed. Users stay in memory. Every /api request first reloads the
// caller's orders from the database, and a write stores what it changed in
// one transaction (a new message or order is inserted as the handler makes
// it, the database numbering messages), so changes made directly in the
// database (the admin endpoints, AppendMessage(s), SetOrderStatus, a test's
// SQL) are what the API serves. The in-memory New stays the fast default
// for tests.
func NewWithDB(opts Options, db *sql.DB) (*Server, error) {
	s := New(opts)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, stmt := range strings.Split(Schema, ";") {
		if strings.TrimSpace(stmt) == "" {
			continue
		}
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return nil, fmt.Errorf("fake: creating tables: %w", err)
		}
	}
	var lastOrder, lastMsg sql.NullInt64
	if err := db.QueryRowContext(ctx, "SELECT MAX(id) FROM communication_orders").Scan(&lastOrder); err != nil {
		return nil, fmt.Errorf("fake: reading communication_orders: %w", err)
	}
	if err := db.QueryRowContext(ctx, "SELECT MAX(id) FROM communication_messages").Scan(&lastMsg); err != nil {
		return nil, fmt.Errorf("fake: reading communication_messages: %w", err)
	}
	s.lastOrder, s.lastMsg = lastOrder.Int64, lastMsg.Int64
	s.db = &dbStore{db: db}
	return s, nil
}

// dbStore is the database behind a Server made by NewWithDB.
type dbStore struct {
	db *sql.DB
	// Requests hold it across reload, handler and store: shared by reads,
	// exclusive for writes, so a read's reload never replaces an order a
	// write has changed in memory but not yet stored.
	mu sync.RWMutex
}

// handle runs one API route; in database mode it wraps the handler in a
// reload of the caller's orders and, for writes, stores what changed.
func (s *Server) handle(rt route, q *apiRequest) answer {
	if s.db == nil || q.user == nil {
		return rt.handle(s, q)
	}
	ctx := q.r.Context()
	write := rt.method != "GET"
	if write {
		s.db.mu.Lock()
		defer s.db.mu.Unlock()
	} else {
		s.db.mu.RLock()
		defer s.db.mu.RUnlock()
	}
	before, err := s.reloadUser(ctx, q.user.ID)
	if err != nil {
		return answer{Code: CodeError, Msg: err.Error()}
	}
	a := rt.handle(s, q)
	if write && a.Code == CodeOK {
		if err := s.storeUser(ctx, q.user.ID, before); err != nil {
			return answer{Code: CodeError, Msg: err.Error()}
		}
	}
	return a
}

const orderCols = `id, order_id, user_id, site_id, user_name, created_time, archive_id, phone, images, sketch_images,
finished_images, title, content, event_date, status, admin_id, quote_price, quote_content, order_extra, order_fields, thumb`

const messageCols = `id, comm_order_id, sender_id, sender_type, sender_name, message_type, content, created_time`

// reloadUser replaces the user's orders in memory with the database's and
// returns copies of them as loaded.
func (s *Server) reloadUser(ctx context.Context, userID int64) (map[int64]Order, error) {
	orders, err := s.db.query(ctx, "user_id = ?", userID)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, o := range s.orders {
		if o.UserID == userID {
			delete(s.orders, id)
		}
	}
	before := make(map[int64]Order, len(orders))
	for _, o := range orders {
		s.adopt(o)
		before[o.ID] = o.clone()
	}
	return before, nil
}

// adopt puts a loaded order in memory; s.mu must be held.
func (s *Server) adopt(o *Order) {
	s.orders[o.ID] = o
	s.lastOrder = max(s.lastOrder, o.ID)
	for _, m := range o.Messages {
		s.lastMsg = max(s.lastMsg, m.ID)
	}
}

// reloadOrder refreshes one order from the database (ok=false: gone).
func (s *Server) reloadOrder(ctx context.Context, id int64) (Order, bool, error) {
	orders, err := s.db.query(ctx, "id = ?", id)
	if err != nil {
		return Order{}, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(orders) == 0 {
		delete(s.orders, id)
		return Order{}, false, nil
	}
	s.adopt(orders[0])
	return orders[0].clone(), true, nil
}

// storeUser writes the user's orders that differ from before, in one
// transaction: new orders, changed columns, new messages.
func (s *Server) storeUser(ctx context.Context, userID int64, before map[int64]Order) error {
	s.mu.RLock()
	var changed []Order
	for _, o := range s.orders {
		if o.UserID == userID {
			changed = append(changed, o.clone())
		}
	}
	s.mu.RUnlock()
	slices.SortFunc(changed, func(a, b Order) int { return int(a.ID - b.ID) })
	return s.db.store(ctx, changed, before)
}

// query loads orders (with their messages) matching where.
func (d *dbStore) query(ctx context.Context, where string, arg any) ([]*Order, error) {
	rows, err := d.db.QueryContext(ctx, "SELECT "+orderCols+" FROM communication_orders WHERE "+where+" ORDER BY id", arg)
	if err != nil {
		return nil, fmt.Errorf("fake: database: %w", err)
	}
	defer rows.Close()
	var orders []*Order
	byID := map[int64]*Order{}
	for rows.Next() {
		o := &Order{}
		var images, sketch, finished, content, quoteContent, extra, fields sql.NullString
		if err := rows.Scan(&o.ID, &o.OrderID, &o.UserID, &o.SiteID, &o.User.UserName, &o.CreatedTime, &o.ArchiveID,
			&o.Phone, &images, &sketch, &finished, &o.Title, &content, &o.EventDate, &o.Status, &o.AdminID,
			&o.QuotePrice, &quoteContent, &extra, &fields, &o.Thumb); err != nil {
			return nil, fmt.Errorf("fake: database: %w", err)
		}
		o.User.ID = o.UserID
		o.Content, o.QuoteContent = content.String, quoteContent.String
		o.Images = jsonList[string](images.String)
		o.SketchImages = jsonList[string](sketch.String)
		o.FinishedImages = jsonList[string](finished.String)
		o.OrderFields = jsonList[any](fields.String)
		o.OrderExtra = map[string]any{}
		json.Unmarshal([]byte(extra.String), &o.OrderExtra)
		if o.OrderExtra == nil {
			o.OrderExtra = map[string]any{}
		}
		o.Messages = []Message{}
		orders = append(orders, o)
		byID[o.ID] = o
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("fake: database: %w", err)
	}
	rows.Close()
	if len(orders) == 0 {
		return nil, nil
	}
	ids := make([]any, 0, len(orders))
	for _, o := range orders {
		ids = append(ids, o.ID)
	}
	mrows, err := d.db.QueryContext(ctx, "SELECT "+messageCols+" FROM communication_messages WHERE comm_order_id IN (?"+
		strings.Repeat(",?", len(ids)-1)+") ORDER BY id", ids...)
	if err != nil {
		return nil, fmt.Errorf("fake: database: %w", err)
	}
	defer mrows.Close()
	for mrows.Next() {
		var m Message
		var content sql.NullString
		if err := mrows.Scan(&m.ID, &m.CommOrderID, &m.SenderID, &m.SenderType, &m.SenderName, &m.MessageType, &content, &m.CreatedTime); err != nil {
			return nil, fmt.Errorf("fake: database: %w", err)
		}
		m.Content = content.String
		if o := byID[m.CommOrderID]; o != nil {
			o.Messages = append(o.Messages, m)
		}
	}
	if err := mrows.Err(); err != nil {
		return nil, fmt.Errorf("fake: database: %w", err)
	}
	return orders, nil
}

func jsonList[T any](s string) []T {
	out := []T{}
	json.Unmarshal([]byte(s), &out)
	if out == nil {
		out = []T{}
	}
	return out
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// orderRow is the column values of o, in orderCols order.
func orderRow(o *Order) []any {
	return []any{o.ID, o.OrderID, o.UserID, o.SiteID, o.User.UserName, o.CreatedTime, o.ArchiveID, o.Phone,
		jsonText(o.Images), jsonText(o.SketchImages), jsonText(o.FinishedImages), o.Title, o.Content, o.EventDate,
		o.Status, o.AdminID, o.QuotePrice, o.QuoteContent, jsonText(o.OrderExtra), jsonText(o.OrderFields), o.Thumb}
}

var orderColNames = strings.Fields(strings.ReplaceAll(orderCols, ",", " "))

// store writes orders against their state in before (missing = new).
func (d *dbStore) store(ctx context.Context, orders []Order, before map[int64]Order) error {
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("fake: database: %w", err)
	}
	defer tx.Rollback()
	wrote := false
	for i := range orders {
		o := &orders[i]
		old, existed := before[o.ID]
		row := orderRow(o)
		known := map[int64]bool{}
		if !existed {
			// "ON DUPLICATE KEY UPDATE id = id": AddOrder may have stored it
			// already (createOrder); then this changes nothing.
			if _, err := tx.ExecContext(ctx, "INSERT INTO communication_orders ("+orderCols+") VALUES (?"+
				strings.Repeat(",?", len(row)-1)+") ON DUPLICATE KEY UPDATE id = id", row...); err != nil {
				return fmt.Errorf("fake: database: inserting order %d: %w", o.ID, err)
			}
			wrote = true
		} else {
			oldRow := orderRow(&old)
			var sets []string
			var args []any
			for c := 1; c < len(row); c++ {
				if !reflect.DeepEqual(row[c], oldRow[c]) {
					sets = append(sets, orderColNames[c]+" = ?")
					args = append(args, row[c])
				}
			}
			if len(sets) > 0 {
				if _, err := tx.ExecContext(ctx, "UPDATE communication_orders SET "+strings.Join(sets, ", ")+" WHERE id = ?",
					append(args, o.ID)...); err != nil {
					return fmt.Errorf("fake: database: updating order %d: %w", o.ID, err)
				}
				wrote = true
			}
			for _, m := range old.Messages {
				known[m.ID] = true
			}
		}
		for _, m := range o.Messages {
			if known[m.ID] {
				continue
			}
			if err := insertMessage(ctx, tx, &m); err != nil {
				return err
			}
			wrote = true
		}
	}
	if !wrote {
		return nil
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("fake: database: commit: %w", err)
	}
	return nil
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// insertMessage stores m; m.ID 0 takes the table's next id and sets it.
func insertMessage(ctx context.Context, db execer, m *Message) error {
	res, err := db.ExecContext(ctx, "INSERT INTO communication_messages ("+messageCols+") VALUES (?,?,?,?,?,?,?,?)"+
		" ON DUPLICATE KEY UPDATE id = id", messageRow(m)...)
	if err != nil {
		return fmt.Errorf("fake: database: inserting a message of order %d: %w", m.CommOrderID, err)
	}
	if m.ID == 0 {
		id, err := res.LastInsertId()
		if err != nil {
			return fmt.Errorf("fake: database: %w", err)
		}
		m.ID = id
	}
	return nil
}

// mustStore is the database step of the Go-side setters (AddOrder, ...),
// which have no error result: a test or demo whose database fails stops
// there.
func mustStore(err error) {
	if err != nil {
		panic(err)
	}
}

// dbAddOrders stores new orders and their messages (AddOrders in database
// mode) in one transaction, many rows per INSERT. It takes no lock:
// createOrder calls AddOrder inside handle, which holds s.db.mu; the
// handler's own store then finds the rows already there ("ON DUPLICATE KEY
// UPDATE id = id", as in store).
func (s *Server) dbAddOrders(orders []Order) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var orderRows, msgRows [][]any
	for i := range orders {
		orderRows = append(orderRows, orderRow(&orders[i]))
		for _, m := range orders[i].Messages {
			msgRows = append(msgRows, messageRow(&m))
		}
	}
	mustStore(s.db.inTx(ctx, func(tx *sql.Tx) error {
		if err := insertRows(ctx, tx, "communication_orders", orderCols, orderRows, " ON DUPLICATE KEY UPDATE id = id"); err != nil {
			return err
		}
		return insertRows(ctx, tx, "communication_messages", messageCols, msgRows, " ON DUPLICATE KEY UPDATE id = id")
	}))
}

// dbAppendMessages inserts admin-side messages into the database only
// (AppendMessages), skipping those whose order is not there.
func (s *Server) dbAppendMessages(ctx context.Context, ms []Message) (int, error) {
	exists := map[int64]bool{}
	var ids []any
	for _, m := range ms {
		if _, seen := exists[m.CommOrderID]; !seen {
			exists[m.CommOrderID] = false
			ids = append(ids, m.CommOrderID)
		}
	}
	for chunk := range slices.Chunk(ids, 1000) {
		rows, err := s.db.db.QueryContext(ctx, "SELECT id FROM communication_orders WHERE id IN (?"+
			strings.Repeat(",?", len(chunk)-1)+")", chunk...)
		if err != nil {
			return 0, fmt.Errorf("fake: database: %w", err)
		}
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return 0, fmt.Errorf("fake: database: %w", err)
			}
			exists[id] = true
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return 0, fmt.Errorf("fake: database: %w", err)
		}
	}
	now := s.opts.Now().Unix()
	var rows [][]any
	for _, m := range ms {
		if !exists[m.CommOrderID] {
			continue
		}
		m.ID = 0 // the database numbers admin-side messages
		m.CreatedTime = cmp.Or(m.CreatedTime, now)
		m.SenderType = cmp.Or(m.SenderType, "admin")
		m.MessageType = cmp.Or(m.MessageType, "text")
		rows = append(rows, messageRow(&m))
	}
	if err := s.db.inTx(ctx, func(tx *sql.Tx) error {
		return insertRows(ctx, tx, "communication_messages", messageCols, rows, "")
	}); err != nil {
		return 0, err
	}
	return len(rows), nil
}

// messageRow is the column values of m, in messageCols order.
func messageRow(m *Message) []any {
	return []any{m.ID, m.CommOrderID, m.SenderID, m.SenderType, m.SenderName, m.MessageType, m.Content, m.CreatedTime}
}

// inTx runs f in one transaction and commits it.
func (d *dbStore) inTx(ctx context.Context, f func(*sql.Tx) error) error {
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("fake: database: %w", err)
	}
	defer tx.Rollback()
	if err := f(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("fake: database: commit: %w", err)
	}
	return nil
}

// insertRows inserts rows into table, as many rows per statement as stay
// well under the server's 65,535 placeholders.
func insertRows(ctx context.Context, db execer, table, cols string, rows [][]any, suffix string) error {
	if len(rows) == 0 {
		return nil
	}
	one := "(?" + strings.Repeat(",?", len(rows[0])-1) + ")"
	for chunk := range slices.Chunk(rows, max(1, 30000/len(rows[0]))) {
		var args []any
		for _, r := range chunk {
			args = append(args, r...)
		}
		q := "INSERT INTO " + table + " (" + cols + ") VALUES " + one + strings.Repeat(","+one, len(chunk)-1) + suffix
		if _, err := db.ExecContext(ctx, q, args...); err != nil {
			return fmt.Errorf("fake: database: inserting %d rows into %s: %w", len(chunk), table, err)
		}
	}
	return nil
}

// dbAppendMessage inserts an admin-side message into the database only.
func (s *Server) dbAppendMessage(ctx context.Context, orderID int64, m Message) (Message, error) {
	var exists int
	err := s.db.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM communication_orders WHERE id = ?", orderID).Scan(&exists)
	if err != nil {
		return Message{}, fmt.Errorf("fake: database: %w", err)
	}
	if exists == 0 {
		return Message{}, errNoOrder
	}
	m.ID = 0 // the database numbers admin-side messages
	m.CommOrderID = orderID
	if m.CreatedTime == 0 {
		m.CreatedTime = s.opts.Now().Unix()
	}
	if m.SenderType == "" {
		m.SenderType = "admin"
	}
	if m.MessageType == "" {
		m.MessageType = "text"
	}
	if err := insertMessage(ctx, s.db.db, &m); err != nil {
		return Message{}, err
	}
	return m, nil
}

// dbUpdateOrder sets columns of one order in the database only.
func (s *Server) dbUpdateOrder(ctx context.Context, orderID int64, set map[string]any) error {
	keys := slices.Sorted(maps.Keys(set))
	var sets []string
	var args []any
	for _, k := range keys {
		sets = append(sets, k+" = ?")
		args = append(args, set[k])
	}
	res, err := s.db.db.ExecContext(ctx, "UPDATE communication_orders SET "+strings.Join(sets, ", ")+" WHERE id = ?",
		append(args, orderID)...)
	if err != nil {
		return fmt.Errorf("fake: database: updating order %d: %w", orderID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		var exists int
		if err := s.db.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM communication_orders WHERE id = ?", orderID).Scan(&exists); err == nil && exists == 0 {
			return errNoOrder
		}
	}
	return nil
}
