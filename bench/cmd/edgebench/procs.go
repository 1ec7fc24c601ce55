package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"anqi-edge/bench/internal/harness"
	"anqi-edge/config"
)

// The child processes (start, stop, readiness, ports, redis-server) are
// bench/internal/harness's; this file holds what is edgebench's own.

// edgeSpec is one anqi-edge set-up.
type edgeSpec struct {
	name     string // short id: l1, l1redis, redis
	label    string // table label
	redis    bool   // use the private Redis
	l1       bool   // cache.memory.max_bytes > 0
	ttl      time.Duration
	pprof    bool
	keyspace string // Redis key prefix, so set-ups never share entries
	cdc      *cdcDB // [cdc] on this database; nil = off
}

// cdcDB is the database anqi-edge's [cdc] reads and the account it uses.
type cdcDB struct {
	addr, user, password string
}

// edge is a running anqi-edge.
type edge struct {
	spec  edgeSpec
	proc  *harness.Proc
	base  string // http://127.0.0.1:PORT
	admin string // http://127.0.0.1:PORT
}

func edgeConfig(s edgeSpec, port, adminPort int, upstream, secret, redisAddr string) string {
	addrs := "[]"
	if s.redis {
		addrs = fmt.Sprintf("[%q]", redisAddr)
	}
	maxBytes := `"256MiB"`
	if !s.l1 {
		maxBytes = "0"
	}
	cfg := fmt.Sprintf(`# written by edgebench
[server]
listen = "127.0.0.1:%d"
shutdown_grace = "2s"

[upstream]
url = %q

[redis]
addrs = %s
key_prefix = %q
channel = %q

[admin]
listen = "127.0.0.1:%d"
pprof = %t

[auth]
token_secret = %q

[cache]
ttl = %q

[cache.memory]
max_bytes = %s

[log]
level = "warn"
`, port, upstream, addrs, s.keyspace, s.keyspace+":invalidate", adminPort, s.pprof, secret, s.ttl.String(), maxBytes)
	if s.cdc != nil {
		cfg += harness.CDCConfig(s.cdc.addr, s.cdc.user, s.cdc.password)
	}
	return cfg
}

// startEdge writes the config of s and starts anqi-edge with it.
func startEdge(ctx context.Context, dir, bin string, s edgeSpec, upstream, secret, redisAddr string) (*edge, error) {
	ports, err := harness.FreePorts(2)
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "edge-"+s.name+".toml")
	if err := os.WriteFile(cfgPath, []byte(edgeConfig(s, ports[0], ports[1], upstream, secret, redisAddr)), 0o644); err != nil {
		return nil, err
	}
	p, err := harness.StartEnv("edge-"+s.name, dir, bin, edgeEnv, "-config", cfgPath)
	if err != nil {
		return nil, err
	}
	e := &edge{spec: s, proc: p,
		base:  fmt.Sprintf("http://127.0.0.1:%d", ports[0]),
		admin: fmt.Sprintf("http://127.0.0.1:%d", ports[1])}
	if err := p.WaitReady(ctx, harness.HTTPOK(e.admin+"/readyz")); err != nil {
		p.Stop(2 * time.Second)
		return nil, err
	}
	return e, nil
}

var errInterrupted = errors.New("interrupted")

// buildCeiling compiles bench/cmd/ceiling (the bare fasthttp limit) into dir.
func buildCeiling(ctx context.Context, root, dir string) (string, error) {
	bin := filepath.Join(dir, "ceiling")
	cmd := exec.CommandContext(ctx, tools["go"], "build", "-o", bin, "./cmd/ceiling")
	cmd.Dir = filepath.Join(root, "bench")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build bench/cmd/ceiling: %v\n%s", err, out)
	}
	return bin, nil
}

// startCeiling starts the ceiling server replaying the answer origin gives
// for token (a warm anqi-edge L1 hit) and returns it with its base URL.
//
// With listener, the ceiling arms the same connection deadlines as
// anqi-edge's public listener (config.toml's server.read_timeout,
// write_timeout and idle_timeout, which every anqi-edge in the run keeps);
// without, it has none (fasthttp's default), a reference row.
func startCeiling(ctx context.Context, dir, bin, name, origin, token string, listener bool) (*harness.Proc, string, error) {
	port, err := harness.FreePort()
	if err != nil {
		return nil, "", err
	}
	listen := fmt.Sprintf("127.0.0.1:%d", port)
	args := []string{"-listen", listen, "-origin", origin, "-token", token}
	if listener {
		s := config.Default().Server
		args = append(args, "-read-timeout", s.ReadTimeout.String(), "-write-timeout", s.WriteTimeout.String(),
			"-idle-timeout", s.IdleTimeout.String())
	}
	p, err := harness.Start(name, dir, bin, args...)
	if err != nil {
		return nil, "", err
	}
	u, _ := url.Parse(origin)
	base := "http://" + listen
	if err := p.WaitReady(ctx, harness.HTTPOK(base+u.RequestURI())); err != nil {
		p.Stop(2 * time.Second)
		return nil, "", err
	}
	return p, base, nil
}
