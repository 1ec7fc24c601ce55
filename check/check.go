// Package check is "anqi-edge check -config FILE", anqi-edge's nginx -t:
// after the file validates, it tries what the file names — AnqiCMS
// answering its JSON envelope, Redis answering as the configured user in
// the configured mode with the commands anqi-edge needs, the TLS pair
// loading and valid, the static root readable — and reports one Result per
// thing tried. Checks of features that are off are not run.
//
// Other packages add their own checks through Options.Extra (the CDC
// checks: the replication account's grants and the binlog settings).
package check

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"anqi-edge/cache"
	"anqi-edge/config"
	"anqi-edge/static"
	"anqi-edge/tlscert"
)

// Result is one line of the report. Err is nil when the check passed;
// otherwise it says why, naming the config key to change.
type Result struct {
	Name string
	Err  error
}

// Func is a check that another package contributes (see Options.Extra).
// It returns one Result per thing it tried, none when its feature is off.
type Func func(ctx context.Context, cfg *config.Config) []Result

// UpstreamProbe is the AnqiCMS call the upstream check makes. It needs no
// login: AnqiCMS answers it with the envelope (code 1001, not logged in),
// and only an AnqiCMS with the communication module knows the path.
const UpstreamProbe = "/api/communication/orders"

// Options shape Run.
type Options struct {
	// Extra checks run after the built-in ones, in order.
	//
	// EXTENSION POINT: the CDC checks (cdc.Check) are added here by main,
	// adapted to Func.
	Extra []Func
	// Timeout bounds each built-in check that talks to a server; default
	// 10s (the configured per-call timeouts still apply inside it).
	Timeout time.Duration
	// Now is the clock for certificate validity; default time.Now.
	Now func() time.Time
}

// Run runs every check for cfg and returns the results in report order.
func Run(ctx context.Context, cfg *config.Config, o Options) []Result {
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	bounded := func(f func(context.Context) []Result) []Result {
		cctx, cancel := context.WithTimeout(ctx, o.Timeout)
		defer cancel()
		return f(cctx)
	}
	var out []Result
	out = append(out, bounded(func(ctx context.Context) []Result { return []Result{Upstream(ctx, cfg.Upstream)} })...)
	out = append(out, bounded(func(ctx context.Context) []Result { return Redis(ctx, cfg.Redis) })...)
	out = append(out, TLS(cfg.Server, o.Now())...)
	out = append(out, Static(cfg.Static)...)
	for _, f := range o.Extra {
		out = append(out, bounded(func(ctx context.Context) []Result { return f(ctx, cfg) })...)
	}
	return out
}

// Write prints one line per result, "ok  NAME" or "FAIL NAME: REASON",
// and reports whether all passed.
func Write(w io.Writer, results []Result) (allOK bool) {
	allOK = true
	for _, r := range results {
		if r.Err == nil {
			fmt.Fprintf(w, "ok   %s\n", r.Name)
			continue
		}
		allOK = false
		fmt.Fprintf(w, "FAIL %s: %s\n", r.Name, oneLine(r.Err.Error()))
	}
	return allOK
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// Upstream calls UpstreamProbe on upstream.url and expects HTTP 200 with a
// JSON object holding a numeric "code", as every AnqiCMS API answer has.
func Upstream(ctx context.Context, u config.Upstream) Result {
	name := "upstream " + u.URL + " answers like AnqiCMS"
	target := strings.TrimRight(u.URL, "/") + UpstreamProbe
	ctx, cancel := context.WithTimeout(ctx, u.Timeout.Duration)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return Result{name, fmt.Errorf("upstream.url %q: %w", u.URL, err)}
	}
	req.Header.Set("User-Agent", "anqi-edge-check")
	client := &http.Client{
		Transport: &http.Transport{
			DialContext:     (&net.Dialer{Timeout: u.DialTimeout.Duration}).DialContext,
			TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12},
		},
		// A redirect means this is not the API (a login page, https).
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return Result{name, fmt.Errorf("upstream.url %q: GET %s: no answer within upstream.timeout %s", u.URL, UpstreamProbe, u.Timeout)}
		}
		return Result{name, fmt.Errorf("upstream.url %q: GET %s: %w", u.URL, UpstreamProbe, unwrapURL(err))}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return Result{name, fmt.Errorf("upstream.url %q: GET %s: reading the answer: %w", u.URL, UpstreamProbe, err)}
	}
	if resp.StatusCode != http.StatusOK {
		return Result{name, fmt.Errorf("upstream.url %q: GET %s answered HTTP %d, not AnqiCMS's JSON envelope (is this AnqiCMS, with the communication module?)",
			u.URL, UpstreamProbe, resp.StatusCode)}
	}
	var env struct {
		Code *json.Number `json:"code"`
		Msg  any          `json:"msg"`
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.UseNumber()
	if err := dec.Decode(&env); err != nil || env.Code == nil {
		return Result{name, fmt.Errorf("upstream.url %q: GET %s answered HTTP 200 without AnqiCMS's {\"code\":...} envelope: %.80q", u.URL, UpstreamProbe, body)}
	}
	if _, err := env.Code.Int64(); err != nil {
		return Result{name, fmt.Errorf("upstream.url %q: GET %s: envelope code %q is not a number", u.URL, UpstreamProbe, env.Code.String())}
	}
	return Result{Name: fmt.Sprintf("%s (GET %s: code %s)", name, UpstreamProbe, env.Code.String())}
}

func unwrapURL(err error) error {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		if inner := ue.Unwrap(); inner != nil {
			return inner
		}
	}
	return err
}

// Redis connects as anqi-edge does (cache.NewRedisClient) and checks, in
// order: the server answers and accepts the credentials; the mode matches
// (Cluster: cluster_state ok; Sentinel: the master is known); and the user
// may use the key prefix and the channel (a throwaway key under the prefix
// is written and deleted, the epoch read, and a message published that
// replicas ignore). Nothing is returned when Redis is off.
func Redis(ctx context.Context, c config.Redis) []Result {
	if len(c.Addrs) == 0 {
		return nil
	}
	mode := "standalone"
	switch {
	case c.MasterName != "":
		mode = "sentinel master " + c.MasterName
	case c.Cluster || len(c.Addrs) > 1:
		mode = "cluster"
	}
	var how []string
	if c.Username != "" {
		how = append(how, "user "+c.Username)
	}
	if c.TLS {
		how = append(how, "tls")
	}
	desc := ""
	if len(how) > 0 {
		desc = ", " + strings.Join(how, ", ")
	}
	name := fmt.Sprintf("redis %s (%s%s) answers", strings.Join(c.Addrs, ","), mode, desc)

	client, err := cache.NewRedisClient(c)
	if err != nil {
		return []Result{{name, err}}
	}
	defer client.Close()
	if err := client.Ping(ctx).Err(); err != nil {
		return []Result{{name, redisError(c, err)}}
	}
	out := []Result{{Name: name}}

	switch mode {
	case "cluster":
		info, err := client.ClusterInfo(ctx).Result()
		r := Result{Name: "redis cluster state is ok"}
		switch {
		case err != nil:
			r.Err = fmt.Errorf("redis.cluster: CLUSTER INFO: %w", redisError(c, err))
		case !strings.Contains(info, "cluster_state:ok"):
			r.Err = fmt.Errorf("redis.cluster: the cluster reports %q", firstLine(info))
		}
		out = append(out, r)
	default:
		if c.MasterName != "" {
			out = append(out, sentinelMaster(ctx, c))
		}
	}

	perm := Result{Name: fmt.Sprintf("redis permissions for key prefix %q and channel %q", c.KeyPrefix+":", c.Channel)}
	perm.Err = redisPermissions(ctx, client, c)
	return append(out, perm)
}

func redisPermissions(ctx context.Context, client redis.UniversalClient, c config.Redis) error {
	var rb [6]byte
	rand.Read(rb[:])
	key := c.KeyPrefix + ":check:" + hex.EncodeToString(rb[:])
	steps := []struct {
		what string
		run  func() error
	}{
		{"GET " + c.KeyPrefix + ":epoch", func() error {
			if err := client.Get(ctx, c.KeyPrefix+":epoch").Err(); err != nil && !errors.Is(err, redis.Nil) {
				return err
			}
			return nil
		}},
		{"SET " + key, func() error { return client.Set(ctx, key, "1", 10*time.Second).Err() }},
		{"DEL " + key, func() error { return client.Del(ctx, key).Err() }},
		// Replicas ignore a payload without the "kind:id:replica" parts.
		{"PUBLISH " + c.Channel, func() error { return client.Publish(ctx, c.Channel, "check").Err() }},
	}
	for _, s := range steps {
		if err := s.run(); err != nil {
			switch {
			case strings.Contains(err.Error(), "NOPERM"):
				return fmt.Errorf("redis.username %q may not %s (%v): grant the ACL in README (keys %s*, channel %s)",
					c.Username, s.what, err, c.KeyPrefix+":", c.Channel)
			case strings.Contains(err.Error(), "READONLY"):
				return fmt.Errorf("redis.addrs %v: %s: the server is a read-only replica; point redis.addrs at the master (or set redis.master_name for Sentinel)", c.Addrs, s.what)
			}
			return fmt.Errorf("redis.addrs %v: %s: %w", c.Addrs, s.what, redisError(c, err))
		}
	}
	return nil
}

func sentinelMaster(ctx context.Context, c config.Redis) Result {
	tlsConfig, _ := cache.RedisTLSConfig(c) // already built once by NewRedisClient
	var errs []error
	for _, addr := range c.Addrs {
		s := redis.NewSentinelClient(&redis.Options{Addr: addr, TLSConfig: tlsConfig, DialTimeout: c.DialTimeout.Duration, MaxRetries: -1, ContextTimeoutEnabled: true})
		hp, err := s.GetMasterAddrByName(ctx, c.MasterName).Result()
		s.Close()
		if err == nil && len(hp) == 2 {
			return Result{Name: fmt.Sprintf("redis sentinel %s names master %q at %s", addr, c.MasterName, net.JoinHostPort(hp[0], hp[1]))}
		}
		errs = append(errs, fmt.Errorf("%s: %w", addr, err))
	}
	return Result{fmt.Sprintf("redis sentinel knows master %q", c.MasterName),
		fmt.Errorf("redis.master_name %q: no sentinel in redis.addrs names it: %w", c.MasterName, errors.Join(errs...))}
}

// redisError rewrites err to name the key an operator would change.
func redisError(c config.Redis, err error) error {
	msg := err.Error()
	var cv *tls.CertificateVerificationError
	var herr x509.HostnameError
	switch {
	case strings.Contains(msg, "WRONGPASS") || strings.Contains(msg, "NOAUTH") || strings.Contains(msg, "invalid password") || strings.Contains(msg, "invalid username-password"):
		return fmt.Errorf("redis.username/redis.password rejected: %v", err)
	case errors.As(err, &herr) || strings.Contains(msg, "certificate is valid for"):
		return fmt.Errorf("redis.tls_server_name %q: %v", c.TLSServerName, err)
	case errors.As(err, &cv) || strings.Contains(msg, "x509:") || strings.Contains(msg, "tls:"):
		return fmt.Errorf("redis.tls / redis.tls_ca %q: %v", c.TLSCA, err)
	case errors.Is(err, context.DeadlineExceeded) || strings.Contains(msg, "i/o timeout"):
		return fmt.Errorf("redis.addrs %v: no answer within redis.dial_timeout %s / redis.timeout %s (wrong address, a firewall, or redis.tls mismatched?): %v",
			c.Addrs, c.DialTimeout, c.Timeout, err)
	}
	return fmt.Errorf("redis.addrs %v: %v", c.Addrs, err)
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(line)
}

// TLS loads server.tls_cert and server.tls_key as the listener will and
// checks that the key matches and the certificate is valid now.
func TLS(s config.Server, now time.Time) []Result {
	if s.TLSCert == "" && s.TLSKey == "" {
		return nil
	}
	leaf, err := tlscert.LoadPair(s.TLSCert, s.TLSKey, now)
	if err != nil {
		return []Result{{"tls certificate and key " + s.TLSCert + " / " + s.TLSKey, err}}
	}
	names := leaf.DNSNames
	for _, ip := range leaf.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 {
		names = []string{leaf.Subject.CommonName}
	}
	days := int(leaf.NotAfter.Sub(now).Hours() / 24)
	return []Result{{Name: fmt.Sprintf("tls certificate %s matches its key, for %s, valid until %s (%d days)",
		s.TLSCert, strings.Join(names, ","), leaf.NotAfter.UTC().Format("2006-01-02"), days)}}
}

// Static opens static.root as the handler will and lists it.
func Static(s config.Static) []Result {
	if s.Root == "" {
		return nil
	}
	name := "static root " + s.Root + " is a readable directory"
	h, err := static.New(static.Options{Root: s.Root})
	if err != nil {
		return []Result{{name, err}}
	}
	defer h.Close()
	entries, err := os.ReadDir(h.Root())
	if err != nil {
		return []Result{{name, fmt.Errorf("static.root %q: %w", s.Root, err)}}
	}
	return []Result{{Name: fmt.Sprintf("%s (%d entries)", name, len(entries))}}
}
