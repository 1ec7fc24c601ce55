package cdc

import (
	"fmt"
	"strings"

	"github.com/go-mysql-org/go-mysql/client"
)

// columnCache holds column names read from information_schema, for servers
// that do not write them into the binary log (binlog_row_metadata other
// than FULL). It is emptied after every DDL statement in the stream, so a
// table changed by ALTER is read again. (information_schema shows the
// current definition: an event older than a later ALTER may be decoded with
// the newer names. Reading column names from the binlog itself, with
// binlog_row_metadata=FULL, has no such gap; the check recommends it.)
type columnCache struct {
	conn  func() (*client.Conn, error)
	names map[string][]string // "db.table" -> columns in ordinal order
}

func newColumnCache(conn func() (*client.Conn, error)) *columnCache {
	return &columnCache{conn: conn, names: map[string][]string{}}
}

func (c *columnCache) reset() { clear(c.names) }

// columns returns db.table's column names in ordinal order; refresh forces a
// new read.
func (c *columnCache) columns(db, table string) ([]string, error) {
	key := db + "." + table
	if n, ok := c.names[key]; ok {
		return n, nil
	}
	conn, err := c.conn()
	if err != nil {
		return nil, err
	}
	r, err := conn.Execute(fmt.Sprintf(
		"SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
		quote(db), quote(table)))
	if err != nil {
		return nil, fmt.Errorf("cdc: reading columns of %s from information_schema: %w", key, err)
	}
	defer r.Close()
	names := make([]string, r.RowNumber())
	for i := range names {
		names[i], _ = getString(r, i, 0)
	}
	c.names[key] = names
	return names, nil
}

// tablesNamed lists (db, table) pairs visible to the account that match a
// rule's name; db "" matches every database.
func (c *columnCache) tablesNamed(db, table string) ([][2]string, error) {
	conn, err := c.conn()
	if err != nil {
		return nil, err
	}
	q := "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_NAME = " + quote(table)
	if db != "" {
		q += " AND TABLE_SCHEMA = " + quote(db)
	}
	r, err := conn.Execute(q)
	if err != nil {
		return nil, fmt.Errorf("cdc: looking up table %s: %w", table, err)
	}
	defer r.Close()
	var out [][2]string
	for i := 0; i < r.RowNumber(); i++ {
		s, _ := getString(r, i, 0)
		t, _ := getString(r, i, 1)
		out = append(out, [2]string{s, t})
	}
	return out, nil
}

// quote makes s a SQL string literal.
func quote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

func indexOf(names []string, col string) int {
	for i, n := range names {
		if strings.EqualFold(n, col) {
			return i
		}
	}
	return -1
}

// splitName splits a rule's "db.table" or "table".
func splitName(name string) (db, table string) {
	if i := strings.IndexByte(name, '.'); i >= 0 {
		return name[:i], name[i+1:]
	}
	return "", name
}
