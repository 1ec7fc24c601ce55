package harness

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// LookTool finds an external program on PATH or in the sbin directories,
// where nginx and redis-server live and which are not on every user's PATH.
func LookTool(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		if fi, e := os.Stat(filepath.Join(dir, name)); e == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return filepath.Join(dir, name), nil
		}
	}
	return "", err
}

// StartRedis runs a private, non-persistent redis-server (bin) on
// 127.0.0.1:port (0 = a free port), so a restart on the same port comes
// back empty, and waits until it answers PING. Its data directory is
// dir/redis; its log is dir/redis.log.
func StartRedis(ctx context.Context, dir, bin string, port int) (*Proc, string, error) {
	if port == 0 {
		var err error
		if port, err = FreePort(); err != nil {
			return nil, "", err
		}
	}
	rdir := filepath.Join(dir, "redis")
	if err := os.MkdirAll(rdir, 0o755); err != nil {
		return nil, "", err
	}
	p, err := Start("redis", dir, bin,
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--daemonize", "no", "--dir", rdir, "--protected-mode", "yes")
	if err != nil {
		return nil, "", err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if err := p.WaitReady(ctx, RedisPing(addr)); err != nil {
		p.Stop(2 * time.Second)
		return nil, "", err
	}
	return p, addr, nil
}

// BuildEdge compiles anqi-edge from the module root into dir/anqi-edge
// with the go tool goBin.
func BuildEdge(ctx context.Context, goBin, root, dir string) (string, error) {
	bin := filepath.Join(dir, "anqi-edge")
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", bin, ".")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build anqi-edge: %v\n%s", err, out)
	}
	return bin, nil
}
