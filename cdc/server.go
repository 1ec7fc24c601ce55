package cdc

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-mysql-org/go-mysql/mysql"
)

// connect opens a plain SQL session (server settings, SHOW BINARY LOGS,
// information_schema), separate from the binlog stream.
func connect(ctx context.Context, o *Options) (*client.Conn, error) {
	// Per-read and per-write deadlines: a server that accepts the TCP
	// connection but never answers (frozen, half-dead network) must not hang
	// the reader in the handshake or a query.
	c, err := client.ConnectWithContext(ctx, o.Addr, o.User, o.Password, "", 5*time.Second,
		func(c *client.Conn) error {
			c.ReadTimeout, c.WriteTimeout = o.ReadTimeout, o.ReadTimeout
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("cdc.addr %s: connecting as cdc.user %q: %w", o.Addr, o.User, err)
	}
	return c, nil
}

// serverInfo is what a session learns about the server before it streams.
type serverInfo struct {
	flavor      string // "mariadb" or "mysql"
	version     string
	serverID    uint32
	uuid        string // @@server_uuid (MySQL); "" on MariaDB
	logBin      bool
	format      string // binlog_format
	rowImage    string // binlog_row_image
	rowMetadata string // binlog_row_metadata; "" where the server has none
	grants      []string
	logs        map[string]uint64 // binary log file -> size; nil when SHOW BINARY LOGS failed
	oldestLog   string
	gtids       gtidState // MariaDB @@gtid_binlog_pos; nil on MySQL
	current     Position  // SHOW MASTER STATUS, zero when it failed
	currentErr  error
}

// getString copies a result cell: go-mysql hands out strings that alias a
// pooled buffer, reused once the result is closed.
func getString(r *mysql.Result, row, col int) (string, error) {
	s, err := r.GetString(row, col)
	return strings.Clone(s), err
}

func queryRow(c *client.Conn, q string) ([]string, error) {
	r, err := c.Execute(q)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	if r.Resultset == nil || r.RowNumber() == 0 {
		return nil, nil
	}
	out := make([]string, r.ColumnNumber())
	for i := range out {
		out[i], _ = getString(r, 0, i)
	}
	return out, nil
}

func readServerInfo(c *client.Conn) (*serverInfo, error) {
	row, err := queryRow(c, "SELECT VERSION(), @@server_id, @@log_bin, @@binlog_format, @@binlog_row_image")
	if err != nil || len(row) < 5 {
		return nil, fmt.Errorf("cdc: reading server settings: %v", err)
	}
	info := &serverInfo{
		flavor:   mysql.MySQLFlavor,
		version:  row[0],
		logBin:   row[2] == "1" || strings.EqualFold(row[2], "ON"),
		format:   strings.ToUpper(row[3]),
		rowImage: strings.ToUpper(row[4]),
	}
	if strings.Contains(strings.ToLower(info.version), "mariadb") {
		info.flavor = mysql.MariaDBFlavor
	}
	id, _ := strconv.ParseUint(row[1], 10, 32)
	info.serverID = uint32(id)
	if info.flavor == mysql.MySQLFlavor {
		if r, err := queryRow(c, "SELECT @@server_uuid"); err == nil && len(r) == 1 {
			info.uuid = r[0]
		}
	}
	if r, err := queryRow(c, "SELECT @@binlog_row_metadata"); err == nil && len(r) == 1 {
		info.rowMetadata = strings.ToUpper(r[0])
	}
	if r, err := c.Execute("SHOW GRANTS"); err == nil {
		for i := 0; i < r.RowNumber(); i++ {
			g, _ := getString(r, i, 0)
			info.grants = append(info.grants, g)
		}
		r.Close()
	}
	if info.logBin {
		if r, err := c.Execute("SHOW BINARY LOGS"); err == nil {
			info.logs = map[string]uint64{}
			for i := 0; i < r.RowNumber(); i++ {
				name, _ := getString(r, i, 0)
				size, _ := r.GetUint(i, 1)
				info.logs[name] = size
				if i == 0 {
					info.oldestLog = name
				}
			}
			r.Close()
		}
		info.current, info.currentErr = masterStatus(c)
		info.current.ServerID, info.current.ServerUUID = info.serverID, info.uuid
		if info.flavor == mysql.MariaDBFlavor {
			// Read after SHOW MASTER STATUS: the state can only be ahead of
			// the one at info.current, never behind, which is what the
			// "not behind" test in positionGone needs.
			if r, err := queryRow(c, "SELECT @@gtid_binlog_pos"); err == nil && len(r) == 1 {
				info.gtids = parseGTIDState(r[0])
				info.current.GTID = info.gtids.String()
			}
		}
	}
	return info, nil
}

// masterStatus is the server's current write position.
func masterStatus(c *client.Conn) (Position, error) {
	row, err := queryRow(c, "SHOW MASTER STATUS")
	if err != nil {
		// MySQL 8.4 renamed it.
		row, err = queryRow(c, "SHOW BINARY LOG STATUS")
	}
	if err != nil {
		return Position{}, fmt.Errorf("cdc: SHOW MASTER STATUS: %w (cdc.user needs REPLICATION CLIENT, on MariaDB BINLOG MONITOR)", err)
	}
	if len(row) < 2 || row[0] == "" {
		return Position{}, fmt.Errorf("cdc: SHOW MASTER STATUS returned nothing: is log_bin on?")
	}
	pos, err := strconv.ParseUint(row[1], 10, 32)
	if err != nil {
		return Position{}, fmt.Errorf("cdc: SHOW MASTER STATUS position %q: %w", row[1], err)
	}
	return Position{File: row[0], Pos: uint32(pos)}, nil
}

// positionGone says why p cannot be resumed on this server, or "".
func (info *serverInfo) positionGone(p Position) string {
	switch {
	case p.ServerID != info.serverID:
		return fmt.Sprintf("it belongs to server_id %d, the server at cdc.addr is server_id %d", p.ServerID, info.serverID)
	case p.ServerUUID != "" && info.uuid != "" && p.ServerUUID != info.uuid:
		return fmt.Sprintf("it belongs to server_uuid %s, the server at cdc.addr is %s", p.ServerUUID, info.uuid)
	}
	if p.GTID != "" && info.gtids != nil {
		if why := info.gtids.behind(parseGTIDState(p.GTID)); why != "" {
			return "the server's GTID state is behind the stored position (a rebuilt or restored server): " + why
		}
	}
	if info.logs == nil {
		return "" // cannot tell; the dump will fail if it is gone
	}
	size, ok := info.logs[p.File]
	if !ok {
		return fmt.Sprintf("binary log %s was purged (oldest left: %s)", p.File, info.oldestLog)
	}
	if uint64(p.Pos) > size {
		return fmt.Sprintf("position %d is past the end of %s (%d bytes): a different server", p.Pos, p.File, size)
	}
	return ""
}

// hasGrant reports whether any grant line holds one of privs (or ALL).
func (info *serverInfo) hasGrant(privs ...string) bool {
	for _, g := range info.grants {
		u := strings.ToUpper(g)
		on := u
		if i := strings.Index(u, " ON "); i >= 0 {
			on = u[:i]
		}
		if strings.Contains(on, "ALL PRIVILEGES") {
			return true
		}
		for _, p := range privs {
			if strings.Contains(on, p) {
				return true
			}
		}
	}
	return false
}

// settingsProblems names every missing server setting and grant, each with
// what to change. Empty when the server is ready for CDC.
func (info *serverInfo) settingsProblems(needSelect bool) []string {
	var p []string
	if !info.logBin {
		p = append(p, "log_bin is OFF (start the server with log_bin / --log-bin)")
	} else if info.format != "ROW" {
		p = append(p, fmt.Sprintf("binlog_format is %s (set binlog_format=ROW)", info.format))
	}
	if info.logBin && info.rowImage != "" && info.rowImage != "FULL" {
		p = append(p, fmt.Sprintf("binlog_row_image is %s (set binlog_row_image=FULL, or order columns outside the key are missed)", info.rowImage))
	}
	if info.grants != nil {
		if !info.hasGrant("REPLICATION SLAVE", "REPLICATION REPLICA", "REPLICA") {
			p = append(p, "cdc.user lacks REPLICATION SLAVE (GRANT REPLICATION SLAVE ON *.* TO ...)")
		}
		if !info.hasGrant("REPLICATION CLIENT", "BINLOG MONITOR", "SUPER") {
			grant := "REPLICATION CLIENT"
			if info.flavor == mysql.MariaDBFlavor {
				grant = "BINLOG MONITOR"
			}
			p = append(p, fmt.Sprintf("cdc.user lacks %s (GRANT %s ON *.* TO ...)", grant, grant))
		}
		if needSelect && !info.hasGrant("SELECT") {
			p = append(p, "cdc.user lacks SELECT on the watched tables, needed to read column names because binlog_row_metadata is not FULL")
		}
	}
	return p
}

// CheckResult is one line of `anqi-edge check`.
type CheckResult struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// Check connects with o's account and reports the server settings, grants
// and watched tables CDC depends on, one result each, without reading the
// binary log.
func Check(ctx context.Context, o Options) []CheckResult {
	o.setDefaults()
	c, err := connect(ctx, &o)
	if err != nil {
		return []CheckResult{{Name: "connect", Detail: err.Error()}}
	}
	defer c.Close()
	res := []CheckResult{{Name: "connect", OK: true, Detail: o.Addr}}
	info, err := readServerInfo(c)
	if err != nil {
		return append(res, CheckResult{Name: "server settings", Detail: err.Error()})
	}
	needSelect := info.rowMetadata != "FULL"
	problems := info.settingsProblems(needSelect)
	add := func(name string, ok bool, detail string) {
		res = append(res, CheckResult{Name: name, OK: ok, Detail: detail})
	}
	find := func(prefix string) string {
		for _, p := range problems {
			if strings.HasPrefix(p, prefix) {
				return p
			}
		}
		return ""
	}
	if p := find("log_bin"); p != "" {
		add("log_bin", false, p)
	} else {
		add("log_bin", true, "ON")
	}
	if p := find("binlog_format"); p != "" {
		add("binlog_format", false, p)
	} else if info.logBin {
		add("binlog_format", true, info.format)
	}
	if p := find("binlog_row_image"); p != "" {
		add("binlog_row_image", false, p)
	}
	meta := info.rowMetadata
	if meta == "" {
		meta = "not supported"
	}
	add("binlog_row_metadata", true, meta+map[bool]string{true: " (column names read from information_schema)", false: ""}[needSelect])
	for _, p := range problems {
		if strings.HasPrefix(p, "cdc.user") {
			add("grants", false, p)
		}
	}
	if find("cdc.user") == "" {
		add("grants", true, strings.Join(info.grants, "; "))
	}
	cols := newColumnCache(func() (*client.Conn, error) { return c, nil })
	for i, t := range o.Tables {
		name := fmt.Sprintf("cdc.table[%d] %s", i, t.Name)
		db, table := splitName(t.Name)
		found, err := cols.tablesNamed(db, table)
		switch {
		case err != nil:
			add(name, false, err.Error())
		case len(found) == 0:
			add(name, false, "no such table visible to cdc.user (check the name with SHOW TABLES LIKE '%communic%', or GRANT SELECT so it can be seen)")
		default:
			for _, ft := range found {
				names, err := cols.columns(ft[0], ft[1])
				if err != nil {
					add(name, false, err.Error())
				} else if indexOf(names, t.OrderColumn) < 0 {
					add(name, false, fmt.Sprintf("%s.%s has no column %q (cdc.table order_column)", ft[0], ft[1], t.OrderColumn))
				} else {
					add(name, true, fmt.Sprintf("%s.%s.%s", ft[0], ft[1], t.OrderColumn))
				}
			}
		}
	}
	return res
}
