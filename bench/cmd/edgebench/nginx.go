package main

import (
	"context"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"time"

	"anqi-edge/bench/internal/harness"
)

// nginxPorts are the listeners of the one nginx instance: the hot-key and
// storm server (proxy_cache_valid 30s), and two polling servers with the
// polling test's ttl, one with proxy_cache_lock only and one that also
// serves stale while one request updates (nginx's closest match to
// anqi-edge's stale-while-revalidate).
type nginxPorts struct {
	hot, poll, pollStale int
}

// nginxConf renders the configuration. The cache key is host, request URI
// and the token header, as the issue specifies: nginx then shares an entry
// per exact token, like anqi-edge's fingerprint identity.
func nginxConf(prefix string, workers int, ports nginxPorts, upstream string, pollValid time.Duration) string {
	userLine := ""
	if os.Geteuid() == 0 {
		// As root the workers would switch to "nobody" and could not write
		// the cache in our private prefix; keep them as the current user.
		if u, err := user.Current(); err == nil {
			group := u.Username
			if g, err := user.LookupGroupId(u.Gid); err == nil {
				group = g.Name
			}
			userLine = fmt.Sprintf("user %s %s;\n", u.Username, group)
		}
	}
	p := func(rel string) string { return filepath.Join(prefix, rel) }
	cached := func(zone string, valid time.Duration, extra string) string {
		return fmt.Sprintf(`        location = /api/communication/order/detail {
            proxy_pass http://anqicms;
            proxy_cache %s;
            proxy_cache_key $host$request_uri$http_token;
            proxy_cache_valid 200 %ds;
            proxy_cache_lock on;
            proxy_ignore_headers Cache-Control Expires Set-Cookie;
%s            add_header X-Cache-Status $upstream_cache_status;
        }
        location / {
            proxy_pass http://anqicms;
        }
`, zone, int(valid/time.Second), extra)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `# written by edgebench
%sworker_processes %d;
worker_rlimit_nofile 65536;
pid %s;
error_log %s warn;

events {
    worker_connections 16384;
}

http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65s;
    keepalive_requests 1000000;
    client_body_temp_path %s;
    proxy_temp_path %s;
    fastcgi_temp_path %s;
    uwsgi_temp_path %s;
    scgi_temp_path %s;
    default_type application/octet-stream;

    proxy_cache_path %s levels=1:2 keys_zone=hot:10m max_size=256m inactive=10m use_temp_path=off;
    proxy_cache_path %s levels=1:2 keys_zone=poll:10m max_size=256m inactive=10m use_temp_path=off;
    proxy_cache_path %s levels=1:2 keys_zone=pollstale:10m max_size=256m inactive=10m use_temp_path=off;

    upstream anqicms {
        server %s;
        keepalive 64;
        keepalive_requests 1000000;
    }
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $http_host;

    server {
        listen 127.0.0.1:%d backlog=4096;
%s    }
    server {
        listen 127.0.0.1:%d backlog=4096;
%s    }
    server {
        listen 127.0.0.1:%d backlog=4096;
%s    }
}
`, userLine, workers, p("nginx.pid"), p("nginx-error.log"),
		p("tmp/body"), p("tmp/proxy"), p("tmp/fastcgi"), p("tmp/uwsgi"), p("tmp/scgi"),
		p("cache/hot"), p("cache/poll"), p("cache/pollstale"),
		upstream,
		ports.hot, cached("hot", 30*time.Second, ""),
		ports.poll, cached("poll", pollValid, ""),
		ports.pollStale, cached("pollstale", pollValid,
			"            proxy_cache_use_stale updating;\n            proxy_cache_background_update on;\n"))
	return b.String()
}

// nginxVersion is `nginx -v` ("nginx/1.22.1").
func nginxVersion() string {
	out, _ := commandOutput(tools["nginx"], "-v")
	return strings.TrimPrefix(strings.TrimSpace(out), "nginx version: ")
}

// startNginx runs nginx in the foreground with its own prefix under dir.
func startNginx(ctx context.Context, dir string, workers int, upstreamHostPort string, pollValid time.Duration) (*harness.Proc, nginxPorts, error) {
	prefix := filepath.Join(dir, "nginx")
	for _, sub := range []string{"tmp/body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi", "cache/hot", "cache/poll", "cache/pollstale", "logs"} {
		if err := os.MkdirAll(filepath.Join(prefix, sub), 0o755); err != nil {
			return nil, nginxPorts{}, err
		}
	}
	ps, err := harness.FreePorts(3)
	if err != nil {
		return nil, nginxPorts{}, err
	}
	ports := nginxPorts{hot: ps[0], poll: ps[1], pollStale: ps[2]}
	conf := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(conf, []byte(nginxConf(prefix, workers, ports, upstreamHostPort, pollValid)), 0o644); err != nil {
		return nil, nginxPorts{}, err
	}
	// -e (1.19.5+) keeps the build's default error log from being opened
	// before the config is read.
	p, err := harness.Start("nginx", dir, tools["nginx"], "-p", prefix, "-c", conf, "-e", filepath.Join(prefix, "nginx-error.log"), "-g", "daemon off;")
	if err != nil {
		return nil, nginxPorts{}, err
	}
	for _, port := range []int{ports.hot, ports.poll, ports.pollStale} {
		if err := p.WaitReady(ctx, harness.HTTPOK(fmt.Sprintf("http://127.0.0.1:%d/__status/200", port))); err != nil {
			p.Stop(5 * time.Second)
			b, _ := os.ReadFile(filepath.Join(prefix, "nginx-error.log"))
			return nil, nginxPorts{}, fmt.Errorf("%w\nnginx-error.log:\n%s", err, b)
		}
	}
	return p, ports, nil
}
