// Package config holds every anqi-edge setting in one place.
//
// A Config is built in three layers: Default(), then config.toml, then
// ANQI_EDGE_<SECTION>_<KEY> environment variables, and is then validated.
// Each key is one struct field below; its comment states the default and the
// unit, and Default sets it — nothing else in anqi-edge knows a default.
// Every error names the key (or env var) and the bad value, on one line, so
// an operator can fix the file without reading code.
package config

import (
	"strings"
	"time"
)

// Config is the whole configuration. Load or Parse returns a validated one;
// Default returns the built-in settings.
type Config struct {
	Server     Server           `toml:"server"`
	Upstream   Upstream         `toml:"upstream"`
	Redis      Redis            `toml:"redis"`
	Admin      Admin            `toml:"admin"`
	Auth       Auth             `toml:"auth"`
	Cache      Cache            `toml:"cache"`
	Watch      Watch            `toml:"watch"`
	Log        Log              `toml:"log"`
	Static     Static           `toml:"static"` // issue 12: see tls_static.go
	CDC        CDC              `toml:"cdc"`
	Invalidate []InvalidateRule `toml:"invalidate"`
}

// Server is the public listener that browsers and apps talk to.
type Server struct {
	// Listen is the public listener, host:port. Default ":8080".
	Listen string `toml:"listen"`
	// MaxRequestBody is the largest request body forwarded (uploads), bytes.
	// Default 32MiB.
	MaxRequestBody Size `toml:"max_request_body"`
	// ShutdownGrace is how long SIGTERM waits for in-flight requests.
	// Default 15s.
	ShutdownGrace Duration `toml:"shutdown_grace"`
	// ReadTimeout bounds reading a whole request, upload included.
	// Default 60s.
	ReadTimeout Duration `toml:"read_timeout"`
	// WriteTimeout bounds writing a whole response. Default 60s.
	WriteTimeout Duration `toml:"write_timeout"`
	// IdleTimeout closes keep-alive connections idle this long. Default 90s.
	IdleTimeout Duration `toml:"idle_timeout"`
	// Concurrency is the maximum number of concurrent connections.
	// Default 262144.
	Concurrency int `toml:"concurrency"`

	// --- TLS on the public listener (issue 12) ---

	// TLSCert is a PEM certificate file (chain: leaf first); with TLSKey set
	// the public listener speaks TLS 1.2+ only. Re-read when the file
	// changes. Default "" (plain HTTP).
	TLSCert string `toml:"tls_cert"`
	// TLSKey is the PEM private key file of TLSCert. Default "".
	TLSKey string `toml:"tls_key"`
	// RedirectHTTP is a second, plain listener (host:port) that answers
	// every request with 308 to the same URL on https; needs TLSCert.
	// Default "" (off).
	RedirectHTTP string `toml:"redirect_http"`

	// --- Request header limit (issue 10, item 15) ---

	// MaxHeaderBytes bounds the request line plus all request headers,
	// bytes; a request over it is answered 431 with the envelope. It is
	// the size of each connection's read buffer (fasthttp's
	// ReadBufferSize), so it costs that much memory per open connection.
	// Default 32KiB, nginx's total for large_client_header_buffers (4×8k):
	// a long Cookie header is ordinary and AnqiCMS accepts it.
	MaxHeaderBytes Size `toml:"max_header_bytes"`
}

// Upstream is AnqiCMS, the origin behind anqi-edge.
type Upstream struct {
	// URL is the AnqiCMS base URL, http or https, no query.
	// Default "http://127.0.0.1:8001".
	URL string `toml:"url"`
	// Timeout bounds a whole upstream call (dial to last body byte).
	// Default 5s.
	Timeout Duration `toml:"timeout"`
	// DialTimeout bounds opening one upstream connection. Default 1s.
	DialTimeout Duration `toml:"dial_timeout"`
	// MaxConns is the connection limit per upstream host. Default 1024.
	MaxConns int `toml:"max_conns"`
	// MaxIdle is how long an idle keep-alive connection is kept. Default 30s.
	MaxIdle Duration `toml:"max_idle"`
	// MaxBody is the largest upstream body that is cached, bytes; larger
	// ones pass through uncached. Default 8MiB.
	MaxBody Size `toml:"max_body"`
}

// Redis is the shared L2 cache and the invalidation bus between replicas.
type Redis struct {
	// Addrs lists Redis servers as host:port. Default ["127.0.0.1:6379"];
	// an empty list means no Redis (L1 only).
	Addrs []string `toml:"addrs"`
	// MasterName, when set, makes Addrs Sentinel addresses for this master.
	// Default "".
	MasterName string `toml:"master_name"`
	// Username for Redis ACL auth. Default "".
	Username string `toml:"username"`
	// Password for Redis auth. Default "".
	Password string `toml:"password"`
	// DB is the database number (must be 0 with Cluster). Default 0.
	DB int `toml:"db"`
	// Cluster forces a cluster client even for a single address.
	// Default false.
	Cluster bool `toml:"cluster"`
	// DialTimeout bounds opening one Redis connection. Default 250ms.
	DialTimeout Duration `toml:"dial_timeout"`
	// Timeout bounds each command's read and write. Default 100ms.
	Timeout Duration `toml:"timeout"`
	// PoolSize is the connections per node; 0 = go-redis default. Default 0.
	PoolSize int `toml:"pool_size"`
	// KeyPrefix starts every Redis key anqi-edge writes. Default "ae".
	KeyPrefix string `toml:"key_prefix"`
	// Channel is the pub/sub channel for invalidations; "" derives it from
	// KeyPrefix ("anqi-edge:invalidate:" + KeyPrefix), so two deployments
	// sharing one Redis under different prefixes never hear each other.
	// Default "".
	Channel string `toml:"channel"`
	// BreakerFailures is how many consecutive failures open the circuit
	// breaker (Redis then skipped). Default 5.
	BreakerFailures int `toml:"breaker_failures"`
	// BreakerCooldown is how long the open breaker waits before one probe.
	// Default 1s.
	BreakerCooldown Duration `toml:"breaker_cooldown"`
	// InvalidationQueue is how many order ids are queued for Redis while it
	// is unreachable. Default 10000.
	InvalidationQueue int `toml:"invalidation_queue"`
	// Autopipeline sends the cache lookups that concurrent requests make
	// while one batch is on the wire as the next batch, one round trip
	// for many (go-redis's autopipeliner, which go-redis marks
	// experimental: false goes back to one pooled connection per
	// lookup). Default true.
	Autopipeline bool `toml:"autopipeline"`

	// --- Redis over TLS (issue 12) ---

	// TLS connects to Redis (and Sentinel) over TLS. Default false.
	TLS bool `toml:"tls"`
	// TLSCA is a PEM file of CA certificates that signed the Redis server
	// certificate; "" = the system roots. Default "".
	TLSCA string `toml:"tls_ca"`
	// TLSServerName is the name the Redis certificate must carry; "" = the
	// host of each address dialed. Default "".
	TLSServerName string `toml:"tls_server_name"`
	// TLSInsecureSkipVerify accepts any Redis certificate. For tests only:
	// it makes TLS worthless against an active attacker. Default false.
	TLSInsecureSkipVerify bool `toml:"tls_insecure_skip_verify"`
}

// Admin is the private listener for health, metrics and purge.
type Admin struct {
	// Listen is the admin listener, host:port; never the public port.
	// Default "127.0.0.1:9090".
	Listen string `toml:"listen"`
	// Token is the bearer token for purge; "" = purge refused (403).
	// Default "".
	Token string `toml:"token"`
	// Pprof exposes /debug/pprof on the admin listener. Default false.
	Pprof bool `toml:"pprof"`
}

// Auth is how user tokens are checked locally.
type Auth struct {
	// TokenSecret is the AnqiCMS site TokenSecret; set = verify user JWTs
	// locally. Default "".
	TokenSecret string `toml:"token_secret"`
	// RenewWindow: tokens this close to expiry bypass the cache. Default 1h.
	RenewWindow Duration `toml:"renew_window"`
	// SiteSecrets maps a request host to that site's TokenSecret, for
	// multi-site installs; hosts not listed use TokenSecret. A key matches
	// the host (X-Host, else Host) as AnqiCMS matches it: case-sensitively,
	// any port ignored, so "Shop.example.com" and "shop.example.com" are two
	// sites, as they are to AnqiCMS. Default empty.
	SiteSecrets map[string]string `toml:"site_secrets"`
}

// MaxInvalidateConfirmTimeout caps cache.invalidate_confirm_timeout: a
// write's whole invalidation runs within one second (proxy.WriteHooks), so
// a longer wait could never be had.
const MaxInvalidateConfirmTimeout = time.Second

// Cache is the freshness policy of cached order details.
type Cache struct {
	// TTL is how long an entry is fresh. Default 30s.
	TTL Duration `toml:"ttl"`
	// StaleWhileRevalidate serves stale this long past TTL while one
	// background refresh runs. Default 30s.
	StaleWhileRevalidate Duration `toml:"stale_while_revalidate"`
	// StaleIfError serves stale this long past TTL when upstream fails.
	// Default 10m.
	StaleIfError Duration `toml:"stale_if_error"`
	// NegativeTTL caches code != 0 answers this long; 0 = never.
	// Default 0s.
	NegativeTTL Duration `toml:"negative_ttl"`
	// Jitter spreads expiry by up to ±Jitter×TTL, fraction in [0, 0.5].
	// Default 0.1.
	Jitter float64 `toml:"jitter"`
	// InvalidateConfirmTimeout is how long a write through the proxy
	// waits, before its answer goes back, for the other replicas to confirm
	// they dropped their copies of the order (read-your-writes across
	// replicas); 0 = do not wait. At most 1s, the write's invalidation
	// budget. Default 200ms.
	InvalidateConfirmTimeout Duration `toml:"invalidate_confirm_timeout"`
	// Memory is the in-process L1.
	Memory Memory `toml:"memory"`
}

// Memory is the in-process L1 cache.
type Memory struct {
	// MaxBytes bounds L1, bytes; 0 = L1 off. Default 256MiB.
	MaxBytes Size `toml:"max_bytes"`
	// TTL is L1 freshness; it bounds cross-replica staleness if pub/sub is
	// lost. Default 5s.
	TTL Duration `toml:"ttl"`
}

// Watch is long-polling for order changes.
type Watch struct {
	// MaxWait is the longest a watch request is held open. Default 30s.
	MaxWait Duration `toml:"max_wait"`
	// Heartbeat is the interval between keep-alive writes. Default 15s.
	Heartbeat Duration `toml:"heartbeat"`
	// MaxWatchers is the limit on concurrent watchers, process-wide.
	// Default 10000.
	MaxWatchers int `toml:"max_watchers"`
	// MaxPerIdentity is the limit on concurrent watchers per identity.
	// Default 16.
	MaxPerIdentity int `toml:"max_per_identity"`
}

// Log is the process log.
type Log struct {
	// Level is debug, info, warn or error. Default "info".
	Level string `toml:"level"`
	// Format is json or text. Default "json".
	Format string `toml:"format"`
}

// CDC invalidates orders from the database's change stream (the binlog of
// the MySQL/MariaDB AnqiCMS writes to), so changes made where anqi-edge
// cannot see them (the admin panel) reach the cache too. Off while Addr is
// empty.
type CDC struct {
	// Addr is the database as host:port, or a unix socket path; "" = off.
	// Default "".
	Addr string `toml:"addr"`
	// User is an account with REPLICATION SLAVE and REPLICATION CLIENT
	// (MariaDB: BINLOG MONITOR), plus SELECT on the watched tables when the
	// server does not log column names (binlog_row_metadata != FULL).
	// Default "".
	User string `toml:"user"`
	// Password of User. Default "".
	Password string `toml:"password"`
	// ServerID is this reader's replica id, unique on that server, 1 to
	// 4294967295; 0 = chosen by anqi-edge. Default 0.
	ServerID int64 `toml:"server_id"`
	// Settle is the delay of a second invalidation of each changed order,
	// which closes the window where the binlog is read before the commit is
	// visible; "0s" = no second invalidation. Default 500ms.
	Settle Duration `toml:"settle"`
	// Heartbeat is how often an idle server sends a heartbeat. Default 2s.
	Heartbeat Duration `toml:"heartbeat"`
	// ReadTimeout drops a connection silent this long (a dead network) and
	// reconnects; must exceed Heartbeat. Default 6s.
	ReadTimeout Duration `toml:"read_timeout"`
	// LeaseTTL is the Redis lease that lets one replica read at a time; a
	// dead reader is replaced within about LeaseTTL plus a third of it.
	// Without Redis every replica reads. Default 3s.
	LeaseTTL Duration `toml:"lease_ttl"`
	// Tables are the watched tables, [[cdc.table]] in the file (file only,
	// no env var). At least one when Addr is set.
	Tables []CDCTable `toml:"table"`
}

// CDCTable maps a table to the column holding the order id.
type CDCTable struct {
	// Name is "table" (any database) or "database.table".
	Name string `toml:"name"`
	// OrderColumn is the column whose value is the order id, e.g. "id" for
	// the orders table, "comm_order_id" for the messages table.
	OrderColumn string `toml:"order_column"`
}

// InvalidateRule is one write hook: after upstream answers code == 0 to
// Method Path, the order whose id is found per ID is invalidated.
type InvalidateRule struct {
	// Method is the HTTP method, e.g. "POST".
	Method string `toml:"method"`
	// Path is the exact request path, e.g. "/api/communication/message/send".
	Path string `toml:"path"`
	// ID says where the order id is: "json:FIELD" (JSON body),
	// "form:FIELD" (form body) or "query:FIELD" (query string).
	ID string `toml:"id"`
}

// Source splits ID into its kind ("json", "form" or "query") and field name.
// For a malformed ID both are "" (Validate rejects such rules).
func (r InvalidateRule) Source() (kind, field string) {
	kind, field, ok := strings.Cut(r.ID, ":")
	if !ok {
		return "", ""
	}
	return kind, field
}

// BuiltinRules returns the AnqiCMS write hooks that apply when config.toml
// lists no [[invalidate]] rules.
func BuiltinRules() []InvalidateRule {
	return []InvalidateRule{
		{Method: "POST", Path: "/api/communication/message/send", ID: "json:comm_order_id"},
		{Method: "POST", Path: "/api/communication/order/update", ID: "json:id"},
		{Method: "POST", Path: "/api/communication/order/accept", ID: "json:id"},
	}
}

// Default returns a fresh Config holding every default. It is the single
// source of defaults; config.toml restates them for operators.
func Default() *Config {
	return &Config{
		Server: Server{
			Listen:         ":8080",
			MaxRequestBody: 32 * MiB,
			ShutdownGrace:  Duration{15 * time.Second},
			ReadTimeout:    Duration{60 * time.Second},
			WriteTimeout:   Duration{60 * time.Second},
			IdleTimeout:    Duration{90 * time.Second},
			Concurrency:    262144,
			MaxHeaderBytes: 32 * KiB,
		},
		Upstream: Upstream{
			URL:         "http://127.0.0.1:8001",
			Timeout:     Duration{5 * time.Second},
			DialTimeout: Duration{1 * time.Second},
			MaxConns:    1024,
			MaxIdle:     Duration{30 * time.Second},
			MaxBody:     8 * MiB,
		},
		Redis: Redis{
			Addrs:             []string{"127.0.0.1:6379"},
			DialTimeout:       Duration{250 * time.Millisecond},
			Timeout:           Duration{100 * time.Millisecond},
			KeyPrefix:         "ae",
			Channel:           "",
			BreakerFailures:   5,
			BreakerCooldown:   Duration{1 * time.Second},
			InvalidationQueue: 10000,
			Autopipeline:      true,
		},
		Admin: Admin{
			Listen: "127.0.0.1:9090",
		},
		Auth: Auth{
			RenewWindow: Duration{1 * time.Hour},
		},
		Cache: Cache{
			TTL:                      Duration{30 * time.Second},
			StaleWhileRevalidate:     Duration{30 * time.Second},
			StaleIfError:             Duration{10 * time.Minute},
			Jitter:                   0.1,
			InvalidateConfirmTimeout: Duration{200 * time.Millisecond},
			Memory: Memory{
				MaxBytes: 256 * MiB,
				TTL:      Duration{5 * time.Second},
			},
		},
		Watch: Watch{
			MaxWait:        Duration{30 * time.Second},
			Heartbeat:      Duration{15 * time.Second},
			MaxWatchers:    10000,
			MaxPerIdentity: 16,
		},
		Log: Log{
			Level:  "info",
			Format: "json",
		},
		CDC: CDC{
			Settle:      Duration{500 * time.Millisecond},
			Heartbeat:   Duration{2 * time.Second},
			ReadTimeout: Duration{6 * time.Second},
			LeaseTTL:    Duration{3 * time.Second},
		},
		Invalidate: BuiltinRules(),
		// Static: off (Root "") by default.
	}
}
