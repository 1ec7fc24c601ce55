package main

// The many-user workload's database: with admin changes (-mu-admin > 0) the
// fake keeps its orders in a private MariaDB with its binary log on, the
// admin replies go into that database through the fake's admin endpoint,
// and both anqi-edge replicas read its binlog ([cdc]). An admin change
// never passes through a proxy, so the binlog is anqi-edge's only way to
// learn of it, and nginx's only way is its TTL.

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/valyala/fasthttp"

	"anqi-edge/anqicms/fake"
	"anqi-edge/bench/internal/harness"
)

const (
	muDatabase    = "anqicms"
	muCDCUser     = "anqi_edge"
	muCDCPassword = "edgebench"
	muCDCWait     = 60 * time.Second // until a replica streams the binlog
)

// muDB is the running database, the fake's pool on it, and what [cdc]
// needs to read it.
type muDB struct {
	server *harness.MariaDB
	pool   *sql.DB
	cdc    *cdcDB
}

// startMuDB starts mariadbd under dir with its binlog on, creates the
// fake's database and anqi-edge's replication account (the grants of
// docs/cdc.md), and opens a pool for the fake.
func startMuDB(ctx context.Context, dir string) (*muDB, error) {
	if !harness.MariaDBAvailable() {
		return nil, fmt.Errorf("-mu-admin > 0 needs mariadbd and mariadb-install-db (apt-get install mariadb-server), or run with -mu-admin 0")
	}
	srv, err := harness.StartMariaDB(ctx, dir)
	if err != nil {
		return nil, fmt.Errorf("starting mariadbd: %w", err)
	}
	db := &muDB{server: srv, cdc: &cdcDB{addr: srv.Addr, user: muCDCUser, password: muCDCPassword}}
	if err := srv.Exec(ctx, "CREATE DATABASE "+muDatabase,
		fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY '%s'", muCDCUser, muCDCPassword),
		fmt.Sprintf("GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '%s'@'%%'", muCDCUser),
		fmt.Sprintf("GRANT SELECT ON %s.* TO '%s'@'%%'", muDatabase, muCDCUser)); err != nil {
		db.stop()
		return nil, fmt.Errorf("preparing mariadbd: %w", err)
	}
	if db.pool, err = srv.Root(muDatabase); err != nil {
		db.stop()
		return nil, err
	}
	// Detail refills (both proxies) and sends run at once; the server
	// allows 500 connections.
	db.pool.SetMaxOpenConns(64)
	db.pool.SetMaxIdleConns(64)
	return db, nil
}

func (d *muDB) stop() {
	if d.pool != nil {
		d.pool.Close()
	}
	d.server.Stop()
}

// seedOrders gives every order n messages from the studio, in one batch
// (AppendMessages: multi-row inserts in database mode, where one insert
// per message would take minutes for 5,000 orders).
func seedOrders(fk *fake.Server, orders []int64, n int) error {
	ms := make([]fake.Message, 0, len(orders)*n)
	for _, id := range orders {
		for k := range n {
			ms = append(ms, fake.Message{CommOrderID: id, SenderID: 1, SenderName: "Studio",
				Content: fmt.Sprintf("Update %d on your order: the proof is attached; please check the colours, the text size and the delivery date.", k+1)})
		}
	}
	if got := fk.AppendMessages(ms); got != len(ms) {
		return fmt.Errorf("seeding messages: %d of %d stored", got, len(ms))
	}
	return nil
}

// waitCDC waits until one of the replicas reads the binlog (its /readyz
// says cdc state "streaming" and leader), so that no admin change of the
// run falls before the reader starts.
func waitCDC(ctx context.Context, admins []string) error {
	ctx, cancel := context.WithTimeout(ctx, muCDCWait)
	defer cancel()
	var last string
	for {
		for _, a := range admins {
			state, leader, err := cdcState(ctx, a)
			if err == nil && state == "streaming" && leader {
				return nil
			}
			last = fmt.Sprintf("%s: cdc %q, leader %v, %v", a, state, leader, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no anqi-edge replica streams the binlog after %s (last: %s)", muCDCWait, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func cdcState(ctx context.Context, admin string) (state string, leader bool, err error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, admin+"/readyz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", false, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", false, err
	}
	var r struct {
		CDC json.RawMessage `json:"cdc"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return "", false, fmt.Errorf("/readyz: %w: %.200s", err, b)
	}
	var c struct {
		State  string `json:"state"`
		Leader bool   `json:"leader"`
	}
	if err := json.Unmarshal(r.CDC, &c); err != nil {
		return "", false, fmt.Errorf("/readyz cdc: %w: %s", err, r.CDC)
	}
	return c.State, c.Leader, nil
}

// adminClient makes admin replies through the fake's admin endpoint: a
// write to the database only, as the AnqiCMS admin panel makes one.
type adminClient struct {
	host *fasthttp.HostClient
}

func newAdminClient(fakeBase string) *adminClient {
	return &adminClient{host: &fasthttp.HostClient{Addr: target{base: fakeBase}.hostPort(), MaxConns: 64,
		ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}}
}

// reply posts an admin reply to order and returns the message's id once
// the endpoint has answered, that is, once the insert is committed.
func (c *adminClient) reply(order int64, content string) (int64, error) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + c.host.Addr + fake.AdminReplyPath)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json")
	b, _ := json.Marshal(map[string]any{"comm_order_id": order, "content": content, "sender_name": "Studio"})
	req.SetBody(b)
	if err := c.host.Do(req, resp); err != nil {
		return 0, fmt.Errorf("admin reply to %d: %w", order, err)
	}
	var ans struct {
		Code int `json:"code"`
		Data struct {
			ID int64 `json:"id"`
		} `json:"data"`
	}
	body := resp.Body()
	if err := json.Unmarshal(body, &ans); err != nil || resp.StatusCode() != fasthttp.StatusOK || ans.Code != 0 || ans.Data.ID == 0 {
		return 0, fmt.Errorf("admin reply to %d: HTTP %d %.120s", order, resp.StatusCode(), bytes.TrimSpace(body))
	}
	return ans.Data.ID, nil
}
