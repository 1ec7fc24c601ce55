package redistest

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"anqi-edge/internal/testproc"
)

// TLSFiles are the PEM files a TLS redis-server is started with.
type TLSFiles struct {
	Cert, Key, CA string
}

// TLSServer is a redis-server that accepts TLS connections only.
type TLSServer struct {
	addr    string
	logPath string
}

// Addr returns "127.0.0.1:PORT" of the TLS port.
func (s *TLSServer) Addr() string { return s.addr }

// LogTail returns the end of the server's log.
func (s *TLSServer) LogTail() string { return testproc.LogTail(s.logPath, 0, logTailLines) }

// StartTLS starts redis-server with its plain port off (--port 0) and TLS
// on a free port, using f; clients need no certificate of their own
// (--tls-auth-clients no). It waits (up to 10s) until a TLS client using
// clientTLS gets an answer to PING (any answer: the default user may be
// disabled). The server is killed when the test ends. It skips the test
// when redis-server is missing, or was built without TLS.
func StartTLS(t testing.TB, f TLSFiles, clientTLS *tls.Config) *TLSServer {
	t.Helper()
	bin := requireServer(t)
	dir := t.TempDir()
	s := &TLSServer{logPath: filepath.Join(dir, "redis.log")}
	lastErr := testproc.StartOnFreePort(maxPortTries, func() (int, error) { return freePort(false, nil) }, func(port int) error {
		s.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		err := s.start(t, bin, dir, port, f, clientTLS)
		if err != nil && strings.Contains(err.Error(), "Address already in use") {
			err = fmt.Errorf("%w: %w", testproc.ErrPortBusy, err)
		}
		return err
	})
	if lastErr == nil {
		return s
	}
	if strings.Contains(lastErr.Error(), "not built with TLS") || strings.Contains(lastErr.Error(), "TLS not supported") {
		t.Skipf("redistest: redis-server without TLS support: %v", lastErr)
	}
	t.Fatalf("redistest: starting redis-server with TLS: %v", lastErr)
	return nil
}

func (s *TLSServer) start(t testing.TB, bin, dir string, port int, f TLSFiles, clientTLS *tls.Config) error {
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin,
		"--port", "0",
		"--tls-port", strconv.Itoa(port),
		"--tls-cert-file", f.Cert,
		"--tls-key-file", f.Key,
		"--tls-ca-cert-file", f.CA,
		"--tls-auth-clients", "no",
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--dir", dir,
	)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	proc, err := testproc.Start(cmd)
	logf.Close()
	if err != nil {
		return fmt.Errorf("exec %s: %w", bin, err)
	}
	if err := proc.WaitReady(func() error { return tlsPing(s.addr, clientTLS) }, startTimeout, pollInterval); err != nil {
		proc.Kill()
		return fmt.Errorf("redis-server with TLS: %w; log:\n%s", err, s.LogTail())
	}
	t.Cleanup(proc.Kill)
	return nil
}

// tlsPing sends PING over TLS and accepts any RESP reply.
func tlsPing(addr string, cfg *tls.Config) error {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 250 * time.Millisecond}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line == "" || (line[0] != '+' && line[0] != '-') {
		return fmt.Errorf("unexpected reply %q", line)
	}
	return nil
}
