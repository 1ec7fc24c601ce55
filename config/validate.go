package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Validate checks every key and returns the first problem as a one-line
// error naming the key and the bad value, e.g.
// `config: upstream.timeout: must be > 0, got "0s"`.
func (c *Config) Validate() error {
	v := validator{}

	v.listen("server.listen", c.Server.Listen)
	v.listen("admin.listen", c.Admin.Listen)
	if v.err == nil && listenersCollide(c.Server.Listen, c.Admin.Listen) {
		v.fail("admin.listen", "must not share the public port of server.listen %q, got %q", c.Server.Listen, c.Admin.Listen)
	}
	v.positiveSize("server.max_request_body", c.Server.MaxRequestBody)
	v.positive("server.shutdown_grace", c.Server.ShutdownGrace)
	v.positive("server.read_timeout", c.Server.ReadTimeout)
	v.positive("server.write_timeout", c.Server.WriteTimeout)
	v.positive("server.idle_timeout", c.Server.IdleTimeout)
	v.atLeast("server.concurrency", c.Server.Concurrency, 1)
	v.headerLimit("server.max_header_bytes", c.Server.MaxHeaderBytes)

	v.upstreamURL("upstream.url", c.Upstream.URL)
	v.positive("upstream.timeout", c.Upstream.Timeout)
	v.positive("upstream.dial_timeout", c.Upstream.DialTimeout)
	v.atLeast("upstream.max_conns", c.Upstream.MaxConns, 1)
	v.positive("upstream.max_idle", c.Upstream.MaxIdle)
	v.positiveSize("upstream.max_body", c.Upstream.MaxBody)

	for i, addr := range c.Redis.Addrs {
		v.hostPort(fmt.Sprintf("redis.addrs[%d]", i), addr)
	}
	v.atLeast("redis.db", c.Redis.DB, 0)
	if c.Redis.Cluster && c.Redis.MasterName != "" {
		v.fail("redis.cluster", "cannot be combined with redis.master_name %q (Sentinel), got %t", c.Redis.MasterName, c.Redis.Cluster)
	}
	if c.Redis.Cluster && c.Redis.DB != 0 {
		v.fail("redis.db", "must be 0 with redis.cluster = true, got %d", c.Redis.DB)
	}
	v.positive("redis.dial_timeout", c.Redis.DialTimeout)
	v.positive("redis.timeout", c.Redis.Timeout)
	v.atLeast("redis.pool_size", c.Redis.PoolSize, 0)
	if strings.ContainsAny(c.Redis.Channel, " \t\n") {
		v.fail("redis.channel", "must not contain white space, got %q", c.Redis.Channel)
	}
	v.atLeast("redis.breaker_failures", c.Redis.BreakerFailures, 1)
	v.positive("redis.breaker_cooldown", c.Redis.BreakerCooldown)
	v.atLeast("redis.invalidation_queue", c.Redis.InvalidationQueue, 1)

	for host, secret := range c.Auth.SiteSecrets {
		if strings.TrimSpace(host) == "" {
			v.fail("auth.site_secrets", "host must not be empty, got %q", host)
		}
		if secret == "" {
			v.fail(fmt.Sprintf("auth.site_secrets[%q]", host), "secret must not be empty")
		}
	}

	v.positive("cache.ttl", c.Cache.TTL)
	if j := c.Cache.Jitter; !(j >= 0 && j <= 0.5) { // also rejects NaN
		v.fail("cache.jitter", "must be between 0 and 0.5, got %v", j)
	}
	if d := c.Cache.InvalidateConfirmTimeout.Duration; d < 0 || d > MaxInvalidateConfirmTimeout {
		v.fail("cache.invalidate_confirm_timeout", "must be between 0s and %s, got %q", MaxInvalidateConfirmTimeout, c.Cache.InvalidateConfirmTimeout)
	}
	if c.Cache.Memory.MaxBytes < 0 {
		v.fail("cache.memory.max_bytes", "must be >= 0, got %q", c.Cache.Memory.MaxBytes)
	}
	if c.Cache.Memory.MaxBytes > 0 {
		v.positive("cache.memory.ttl", c.Cache.Memory.TTL)
	}

	v.positive("watch.max_wait", c.Watch.MaxWait)
	v.positive("watch.heartbeat", c.Watch.Heartbeat)
	v.atLeast("watch.max_watchers", c.Watch.MaxWatchers, 1)
	v.atLeast("watch.max_per_identity", c.Watch.MaxPerIdentity, 1)

	v.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", c.Log.Format, "json", "text")

	c.validateTLSStatic(&v) // issue 12: tls_static.go
	v.cdc(&c.CDC)

	seen := make(map[string]int)
	for i, r := range c.Invalidate {
		key := fmt.Sprintf("invalidate[%d]", i)
		v.oneOf(key+".method", r.Method, "GET", "POST", "PUT", "PATCH", "DELETE")
		if !strings.HasPrefix(r.Path, "/") || strings.ContainsAny(r.Path, "?# ") {
			v.fail(key+".path", "must be an exact path starting with \"/\" (no query), got %q", r.Path)
		}
		kind, field := r.Source()
		if (kind != "json" && kind != "form" && kind != "query") || field == "" {
			v.fail(key+".id", "must be \"json:FIELD\", \"form:FIELD\" or \"query:FIELD\", got %q", r.ID)
		}
		if j, dup := seen[r.Method+" "+r.Path]; dup {
			v.fail(key, "duplicates invalidate[%d] for %s %s", j, r.Method, r.Path)
		}
		seen[r.Method+" "+r.Path] = i
	}
	return v.err
}

func (v *validator) cdc(c *CDC) {
	if c.Addr == "" {
		if len(c.Tables) > 0 {
			v.fail("cdc.addr", "must be set (host:port of the database) when [[cdc.table]] rules are listed, got %q", c.Addr)
		}
		return
	}
	if !strings.HasPrefix(c.Addr, "/") {
		v.hostPort("cdc.addr", c.Addr)
	}
	if c.ServerID < 0 || c.ServerID > 1<<32-1 {
		v.fail("cdc.server_id", "must be between 0 (chosen by anqi-edge) and 4294967295, got %d", c.ServerID)
	}
	if c.Settle.Duration < 0 {
		v.fail("cdc.settle", "must be >= 0 (0s = no second invalidation), got %q", c.Settle)
	}
	v.positive("cdc.heartbeat", c.Heartbeat)
	v.positive("cdc.read_timeout", c.ReadTimeout)
	if c.ReadTimeout.Duration <= c.Heartbeat.Duration {
		v.fail("cdc.read_timeout", "must be longer than cdc.heartbeat %q, got %q", c.Heartbeat, c.ReadTimeout)
	}
	v.positive("cdc.lease_ttl", c.LeaseTTL)
	if len(c.Tables) == 0 {
		v.fail("cdc.table", "at least one [[cdc.table]] with name and order_column is needed when cdc.addr is set")
	}
	seen := map[string]int{}
	for i, t := range c.Tables {
		key := fmt.Sprintf("cdc.table[%d]", i)
		if t.Name == "" || strings.ContainsAny(t.Name, " `'\"") || strings.Count(t.Name, ".") > 1 ||
			strings.HasPrefix(t.Name, ".") || strings.HasSuffix(t.Name, ".") {
			v.fail(key+".name", "must be \"table\" or \"database.table\", got %q", t.Name)
		}
		if t.OrderColumn == "" || strings.ContainsAny(t.OrderColumn, " .`'\"") {
			v.fail(key+".order_column", "must name the column holding the order id (e.g. \"id\" or \"comm_order_id\"), got %q", t.OrderColumn)
		}
		name := strings.ToLower(t.Name)
		if j, dup := seen[name]; dup {
			v.fail(key+".name", "duplicates cdc.table[%d] %q", j, t.Name)
		}
		seen[name] = i
	}
}

// validator keeps the first failure; later checks are no-ops after it.
type validator struct{ err error }

func (v *validator) fail(key, format string, args ...any) {
	if v.err == nil {
		v.err = fmt.Errorf("config: %s: %s", key, fmt.Sprintf(format, args...))
	}
}

func (v *validator) positive(key string, d Duration) {
	if d.Duration <= 0 {
		v.fail(key, "must be > 0, got %q", d)
	}
}

func (v *validator) positiveSize(key string, s Size) {
	if s <= 0 {
		v.fail(key, "must be > 0, got %q", s)
	}
}

func (v *validator) atLeast(key string, n, low int) {
	if n < low {
		v.fail(key, "must be >= %d, got %d", low, n)
	}
}

func (v *validator) oneOf(key, s string, allowed ...string) {
	for _, a := range allowed {
		if s == a {
			return
		}
	}
	v.fail(key, "must be one of %s, got %q", strings.Join(allowed, "|"), s)
}

// listen checks a listener address: [host]:port, port 0-65535 (0 = any).
func (v *validator) listen(key, addr string) {
	if _, _, err := splitAddr(addr); err != nil {
		v.fail(key, "must be host:port with a numeric port (%v), got %q", err, addr)
	}
}

// hostPort checks a dial address: host:port with a host and port 1-65535.
func (v *validator) hostPort(key, addr string) {
	host, port, err := splitAddr(addr)
	if err == nil && host == "" {
		err = fmt.Errorf("missing host")
	}
	if err == nil && port == 0 {
		err = fmt.Errorf("port 0")
	}
	if err != nil {
		v.fail(key, "must be host:port with a numeric port (%v), got %q", err, addr)
	}
}

// headerLimit keeps server.max_header_bytes where a request line and
// ordinary headers fit (1KiB) and below what would make every open
// connection's read buffer a memory problem (1MiB).
func (v *validator) headerLimit(key string, s Size) {
	if s < KiB || s > MiB {
		v.fail(key, "must be between 1KiB and 1MiB, got %q", s)
	}
}

func (v *validator) upstreamURL(key, raw string) {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		v.fail(key, "must be an http or https URL, got %q", raw)
	case u.Scheme != "http" && u.Scheme != "https":
		v.fail(key, "scheme must be http or https, got %q", raw)
	case u.Host == "" || u.Hostname() == "":
		v.fail(key, "must have a host, got %q", raw)
	case u.Port() != "" && !validPort(u.Port()):
		v.fail(key, "port must be numeric 1-65535, got %q", raw)
	case u.RawQuery != "" || u.ForceQuery:
		v.fail(key, "must not have a query, got %q", raw)
	case u.Fragment != "":
		v.fail(key, "must not have a fragment, got %q", raw)
	}
}

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= 1 && n <= 65535
}

// splitAddr splits host:port; host may be empty, port must be 0-65535.
func splitAddr(addr string) (host string, port int, err error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		if ae, ok := err.(*net.AddrError); ok {
			return "", 0, errors.New(ae.Err) // the caller prints the address
		}
		return "", 0, err
	}
	port, err = strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 || strings.HasPrefix(p, "+") {
		return "", 0, fmt.Errorf("port %q is not a number 0-65535", p)
	}
	return host, port, nil
}

// listenersCollide reports whether two valid listen addresses would bind
// the same socket: same non-zero port and either host is a wildcard or
// both hosts are the same.
func listenersCollide(a, b string) bool {
	ha, pa, errA := splitAddr(a)
	hb, pb, errB := splitAddr(b)
	if errA != nil || errB != nil || pa != pb || pa == 0 {
		return false
	}
	return wildcardHost(ha) || wildcardHost(hb) || canonicalHost(ha) == canonicalHost(hb)
}

func wildcardHost(h string) bool {
	return h == "" || h == "0.0.0.0" || h == "::"
}

func canonicalHost(h string) string {
	h = strings.ToLower(h)
	if h == "localhost" {
		return "127.0.0.1"
	}
	if ip := net.ParseIP(h); ip != nil {
		return ip.String()
	}
	return h
}
