package harness

import (
	"context"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"time"
)

// NginxUserLine keeps nginx's workers as the current user when the harness
// runs as root: they would switch to "nobody" and could not write the cache
// in a private prefix. Empty when not root.
func NginxUserLine() string {
	if os.Geteuid() != 0 {
		return ""
	}
	u, err := user.Current()
	if err != nil {
		return ""
	}
	group := u.Username
	if g, err := user.LookupGroupId(u.Gid); err == nil {
		group = g.Name
	}
	return fmt.Sprintf("user %s %s;\n", u.Username, group)
}

// StartNginx writes conf(prefix) to prefix/nginx.conf under dir/nginx and
// runs nginx in the foreground with it, until every url in ready answers 200.
// The prefix has tmp/ and cache/ ready for the config to use.
func StartNginx(ctx context.Context, dir string, conf func(prefix string) string, ready ...string) (*Proc, error) {
	bin, err := LookTool("nginx")
	if err != nil {
		return nil, err
	}
	prefix := filepath.Join(dir, "nginx")
	for _, sub := range []string{"tmp/body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi", "cache", "logs"} {
		if err := os.MkdirAll(filepath.Join(prefix, sub), 0o755); err != nil {
			return nil, err
		}
	}
	cf := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(cf, []byte(conf(prefix)), 0o644); err != nil {
		return nil, err
	}
	errLog := filepath.Join(prefix, "nginx-error.log")
	p, err := Start("nginx", dir, bin, "-p", prefix, "-c", cf, "-e", errLog, "-g", "daemon off;")
	if err != nil {
		return nil, err
	}
	for _, u := range ready {
		if err := p.WaitReady(ctx, HTTPOK(u)); err != nil {
			p.Stop(5 * time.Second)
			b, _ := os.ReadFile(errLog)
			return nil, fmt.Errorf("%w\nnginx-error.log:\n%s", err, strings.TrimSpace(string(b)))
		}
	}
	return p, nil
}

// NginxTempPaths is the http-block lines that keep nginx's temp files in prefix.
func NginxTempPaths(prefix string) string {
	var b strings.Builder
	for _, k := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		sub := k
		if k == "client_body" {
			sub = "body"
		}
		fmt.Fprintf(&b, "    %s_temp_path %s;\n", k, filepath.Join(prefix, "tmp", sub))
	}
	return b.String()
}
