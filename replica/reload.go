package replica

import (
	"errors"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/valyala/fasthttp"

	"anqi-edge/cache"
	"anqi-edge/cdc"
	"anqi-edge/config"
	"anqi-edge/proxy"
	"anqi-edge/static"
)

// Reloading: SIGHUP and POST /admin/reload re-read the config file. Keys
// that only shape new requests change live; keys that own a listener, a
// connection pool or a process-wide resource keep their old value until a
// restart, and one warning names them. L1, Redis and in-flight requests are
// untouched either way.

// liveKeys can change without a restart (dotted config keys; a key stands
// for everything under it).
var liveKeys = []string{
	"cache.ttl", "cache.stale_while_revalidate", "cache.stale_if_error",
	"cache.negative_ttl", "cache.jitter", "cache.memory.ttl", "cache.invalidate_confirm_timeout",
	"invalidate", "log.level", "admin.token",
	"upstream.timeout", "upstream.dial_timeout",
	"server.tls_cert", "server.tls_key", "static.root",
	"cdc.table",
}

func isLive(key string) bool {
	return slices.ContainsFunc(liveKeys, func(l string) bool { return key == l || strings.HasPrefix(key, l+".") })
}

// SetReloader gives the replica the function that re-reads its config file
// and calls Reload (main sets it; POST /admin/reload runs it). Without one,
// POST /admin/reload answers that there is no file to reload.
func (r *Replica) SetReloader(f func() error) {
	r.reloadMu.Lock()
	r.reloader = f
	r.reloadMu.Unlock()
}

func (r *Replica) reload() error {
	r.reloadMu.Lock()
	f := r.reloader
	r.reloadMu.Unlock()
	if f == nil {
		return errors.New("this replica was not started from a config file")
	}
	return f()
}

// Reload applies next, already validated. Live keys take effect for new
// requests; the other keys that changed are returned (they need a restart
// and keep their old value). An error (a certificate or static root that
// does not load) leaves the running config untouched.
func (r *Replica) Reload(next *config.Config) (restartNeeded []string, err error) {
	r.reloadMu.Lock()
	defer r.reloadMu.Unlock()
	cur := r.cfg.Load()
	merged := *cur
	changed := false
	for _, k := range config.Diff(cur, next) {
		if !isLive(k) {
			restartNeeded = append(restartNeeded, k)
			continue
		}
		changed = true
	}
	// TLS can change its files, not be switched on or off: that is a
	// different listener.
	if (cur.Server.TLSCert == "") != (next.Server.TLSCert == "") {
		restartNeeded = append(restartNeeded, "server.tls_cert")
		next.Server.TLSCert, next.Server.TLSKey = cur.Server.TLSCert, cur.Server.TLSKey
	}
	if !changed {
		return restartNeeded, nil
	}

	// Everything that can fail is prepared first, so a bad file changes
	// nothing.
	var files *static.Handler
	if next.Static.Root != cur.Static.Root && next.Static.Root != "" {
		if files, err = static.New(static.Options{Root: next.Static.Root}); err != nil {
			return nil, err
		}
	}
	if r.certs != nil && (next.Server.TLSCert != cur.Server.TLSCert || next.Server.TLSKey != cur.Server.TLSKey) {
		if err := r.certs.SetFiles(next.Server.TLSCert, next.Server.TLSKey); err != nil {
			if files != nil {
				files.Close()
			}
			return nil, err
		}
	} else if r.certs != nil {
		// Same files: read them again anyway, as nginx -s reload does.
		if err := r.certs.Reload(); err != nil {
			return nil, err
		}
	}

	merged.Cache = next.Cache
	merged.Cache.Memory.MaxBytes = cur.Cache.Memory.MaxBytes
	merged.Invalidate = next.Invalidate
	merged.Log.Level = next.Log.Level
	merged.Admin.Token = next.Admin.Token
	merged.Upstream.Timeout, merged.Upstream.DialTimeout = next.Upstream.Timeout, next.Upstream.DialTimeout
	merged.Server.TLSCert, merged.Server.TLSKey = next.Server.TLSCert, next.Server.TLSKey
	merged.Static = next.Static
	merged.CDC.Tables = next.CDC.Tables

	r.tiers.SetPolicy(policy(merged.Cache))
	r.tiers.L1().SetFresh(merged.Cache.Memory.TTL.Duration)
	r.tiers.SetConfirmTimeout(merged.Cache.InvalidateConfirmTimeout.Duration)
	r.detail.SetOptions(detailOptions(&merged))
	r.hooks.SetRules(merged.Invalidate)
	r.up.SetTimeouts(merged.Upstream.Timeout.Duration, merged.Upstream.DialTimeout.Duration)
	if r.cdc != nil {
		r.cdc.SetTables(cdc.FromConfig(merged.CDC).Tables)
	}
	if merged.Static.Root != cur.Static.Root {
		if old := r.static.p.Swap(files); old != nil {
			old.Close()
		}
	}
	r.cfg.Store(&merged)
	return restartNeeded, nil
}

// policy is the cache's freshness policy from the cache.* keys.
func policy(c config.Cache) cache.Policy {
	return cache.Policy{
		TTL:                  c.TTL.Duration,
		StaleWhileRevalidate: c.StaleWhileRevalidate.Duration,
		StaleIfError:         c.StaleIfError.Duration,
		NegativeTTL:          c.NegativeTTL.Duration,
		Jitter:               c.Jitter,
	}
}

func detailOptions(cfg *config.Config) proxy.DetailOptions {
	return proxy.DetailOptions{
		RenewWindow:   cfg.Auth.RenewWindow.Duration,
		MaxBody:       int(cfg.Upstream.MaxBody),
		StoreNegative: cfg.Cache.NegativeTTL.Duration > 0,
	}
}

// staticFiles is the static-file handler in force; a reload may swap it
// (static.root) or switch it off.
type staticFiles struct {
	p atomic.Pointer[static.Handler]
}

func (s *staticFiles) Serve(ctx *fasthttp.RequestCtx) bool {
	h := s.p.Load()
	return h != nil && h.Serve(ctx)
}
