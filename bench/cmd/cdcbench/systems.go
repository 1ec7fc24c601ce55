package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"anqi-edge/bench/internal/harness"
)

// system is one front under test: its name in the table, and how to start
// it. start returns the base URLs clients are spread over, and stops
// whatever it started when the run's group stops.
type system struct {
	key   string // cdc, ttl, nginx: the marker and file names
	label string
	modes []string // client modes it serves
	start func(ctx context.Context, env *runEnv, g *harness.Group) ([]string, error)
}

// runEnv is what every system shares in one run.
type runEnv struct {
	opts     options
	dir      string
	edgeBin  string
	upstream string // http://127.0.0.1:PORT of the fake AnqiCMS
	redis    string
	db       *harness.MariaDB
	probe    *probe
}

const (
	tokenSecret = "cdcbench-secret"
	cdcUser     = "cdc"
	cdcPassword = "cdcbench"
)

var allModes = []string{modeSSE, modeLongPoll, modePoll}

func systems(o options) []system {
	return []system{
		{key: "cdc", label: "anqi-edge + CDC (2 replicas, Redis)", modes: allModes,
			start: func(ctx context.Context, env *runEnv, g *harness.Group) ([]string, error) {
				return startEdges(ctx, env, g, "cdc", o.cdcTTL, true)
			}},
		{key: "ttl", label: fmt.Sprintf("anqi-edge, no CDC (2 replicas, Redis, ttl %s)", o.ttl), modes: allModes,
			start: func(ctx context.Context, env *runEnv, g *harness.Group) ([]string, error) {
				return startEdges(ctx, env, g, "ttl", o.ttl, false)
			}},
		// nginx has no watch endpoints: its customers can only poll.
		{key: "nginx", label: fmt.Sprintf("nginx proxy_cache (valid %s)", o.ttl), modes: []string{modePoll},
			start: func(ctx context.Context, env *runEnv, g *harness.Group) ([]string, error) {
				return startNginx(ctx, env, g, o.ttl)
			}},
	}
}

// edgeConfig is one replica's file: the defaults of config.toml but for
// the listeners, Redis keyspace, ttl and (when cdc) the [cdc] section.
func edgeConfig(key string, port, adminPort int, env *runEnv, ttl time.Duration, cdc bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, `# written by cdcbench
[server]
listen = "127.0.0.1:%d"
shutdown_grace = "2s"

[upstream]
url = %q

[redis]
addrs = [%q]
key_prefix = "cdcbench-%s"
channel = "cdcbench-%s:invalidate"

[admin]
listen = "127.0.0.1:%d"

[auth]
token_secret = %q

[cache]
ttl = %q

[watch]
max_per_identity = 1000

[log]
level = "warn"
`, port, env.upstream, env.redis, key, key, adminPort, tokenSecret, ttl.String())
	if cdc {
		b.WriteString(harness.CDCConfig(env.db.Addr, cdcUser, cdcPassword))
	}
	return b.String()
}

// startEdges starts two anqi-edge replicas sharing the run's Redis.
func startEdges(ctx context.Context, env *runEnv, g *harness.Group, key string, ttl time.Duration, cdc bool) ([]string, error) {
	var bases []string
	for i := range 2 {
		ports, err := harness.FreePorts(2)
		if err != nil {
			return nil, err
		}
		name := fmt.Sprintf("edge-%s-%d", key, i+1)
		cfg := filepath.Join(env.dir, name+".toml")
		if err := os.WriteFile(cfg, []byte(edgeConfig(key, ports[0], ports[1], env, ttl, cdc)), 0o644); err != nil {
			return nil, err
		}
		p, err := harness.Start(name, env.dir, env.edgeBin, "-config", cfg)
		if err != nil {
			return nil, err
		}
		g.Add(p)
		if err := p.WaitReady(ctx, harness.HTTPOK("http://127.0.0.1:"+strconv.Itoa(ports[1])+"/readyz")); err != nil {
			return nil, err
		}
		bases = append(bases, "http://127.0.0.1:"+strconv.Itoa(ports[0]))
	}
	return bases, nil
}

// startNginx runs nginx with one server block caching the detail endpoint
// for ttl, keyed like edgebench's (host, URI, token), with proxy_cache_lock.
func startNginx(ctx context.Context, env *runEnv, g *harness.Group, ttl time.Duration) ([]string, error) {
	ports, err := harness.FreePorts(1)
	if err != nil {
		return nil, err
	}
	upstream := strings.TrimPrefix(env.upstream, "http://")
	base := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	conf := func(prefix string) string {
		return fmt.Sprintf(`# written by cdcbench
%sworker_processes 1;
pid %s;
error_log %s warn;
events { worker_connections 4096; }
http {
    access_log off;
    tcp_nodelay on;
    keepalive_requests 1000000;
%s    proxy_cache_path %s levels=1:2 keys_zone=cdc:10m max_size=64m inactive=10m use_temp_path=off;
    upstream anqicms {
        server %s;
        keepalive 64;
    }
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $http_host;
    server {
        listen 127.0.0.1:%d;
        location = %s {
            proxy_pass http://anqicms;
            proxy_cache cdc;
            proxy_cache_key $host$request_uri$http_token;
            proxy_cache_valid 200 %ds;
            proxy_cache_lock on;
            proxy_ignore_headers Cache-Control Expires Set-Cookie;
            add_header X-Cache-Status $upstream_cache_status;
        }
        location / {
            proxy_pass http://anqicms;
        }
    }
}
`, harness.NginxUserLine(), filepath.Join(prefix, "nginx.pid"), filepath.Join(prefix, "nginx-error.log"),
			harness.NginxTempPaths(prefix), filepath.Join(prefix, "cache"), upstream, ports[0], detailPath,
			int(ttl/time.Second))
	}
	p, err := harness.StartNginx(ctx, env.dir, conf, base+"/__status/200")
	if err != nil {
		return nil, err
	}
	g.Add(p)
	return []string{base}, nil
}
