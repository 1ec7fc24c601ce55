package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, ProcessServerGoroutine)
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestServerStartKillRestart(t *testing.T) {
	s := Start(t)
	addr := s.Addr()
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("Addr() = %q, want 127.0.0.1:PORT", addr)
	}
	c := s.Client(t)
	ctx := ctxT(t, 30*time.Second)

	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING: %v", err)
	}
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	if got, err := c.ConfigGet(ctx, "save").Result(); err != nil || got["save"] != "" {
		t.Fatalf("CONFIG GET save = %v, %v; want persistence off", got, err)
	}

	pid := s.proc.Pid()
	s.Kill()
	s.Kill() // idempotent
	if err := syscall.Kill(pid, 0); err == nil {
		t.Fatalf("process %d still exists after Kill", pid)
	}
	if err := ping(addr, 200*time.Millisecond); err == nil {
		t.Fatal("server still answers PING after Kill")
	}

	s.Restart(t)
	if s.Addr() != addr {
		t.Fatalf("Restart moved the server from %s to %s", addr, s.Addr())
	}
	// The same client reconnects to the same address.
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after restart: %v", err)
	}
	if err := c.Get(ctx, "k").Err(); err != redis.Nil {
		t.Fatalf("GET after restart: err = %v, want redis.Nil (no persistence)", err)
	}

	// Restart retries while the port is briefly held by someone else.
	s.Kill()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("port of a killed server not free: %v", err)
	}
	released := make(chan struct{})
	go func() {
		defer close(released)
		time.Sleep(300 * time.Millisecond)
		ln.Close()
	}()
	s.Restart(t)
	<-released
	if s.Addr() != addr || ping(addr, time.Second) != nil {
		t.Fatalf("Restart after a busy port: addr %s, want %s answering", s.Addr(), addr)
	}

	// Restart while running, then a second kill/restart cycle.
	s.Restart(t)
	s.Kill()
	s.Restart(t)
	if err := c.Set(ctx, "k2", "v2", 0).Err(); err != nil {
		t.Fatalf("SET after restarts: %v", err)
	}
	s.FlushAll(t)
	if n, err := c.DBSize(ctx).Result(); err != nil || n != 0 {
		t.Fatalf("DBSIZE after FlushAll = %d, %v", n, err)
	}
	if _, err := os.Stat(s.logPath); err != nil {
		t.Fatalf("log file: %v", err)
	}
}

func TestStartFailureIncludesLog(t *testing.T) {
	s := newServer(t, requireServer(t), []string{"--no-such-option", "x"})
	port, err := freePort(false, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = s.start(port)
	if err == nil {
		t.Fatal("start with a bad option succeeded")
	}
	if !strings.Contains(err.Error(), "no-such-option") {
		t.Fatalf("error does not include the log tail: %v", err)
	}
}

func TestSharedFallsBackToPrivateServer(t *testing.T) {
	t.Setenv(SharedEnv, "127.0.0.1:1") // nothing listens there
	addr := Shared(t)
	if addr == "127.0.0.1:1" {
		t.Fatal("Shared returned an address that does not answer")
	}
	if err := ping(addr, time.Second); err != nil {
		t.Fatalf("PING %s: %v", addr, err)
	}

	t.Setenv(SharedEnv, addr)
	if got := Shared(t); got != addr {
		t.Fatalf("Shared() = %s, want the answering %s", got, addr)
	}
	if p := Prefix(t); !strings.HasPrefix(p, "test:"+t.Name()+":") {
		t.Fatalf("Prefix() = %q", p)
	}
}

func TestCluster(t *testing.T) {
	start := time.Now()
	cl := StartCluster(t)
	t.Logf("cluster up in %v: %v", time.Since(start), cl.Addrs())
	ctx := ctxT(t, 30*time.Second)

	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()})
	t.Cleanup(func() { _ = cc.Close() })

	// Keys spread over all three masters.
	const n = 60
	for i := range n {
		if err := cc.Set(ctx, fmt.Sprintf("key:%d", i), i, 0).Err(); err != nil {
			t.Fatalf("SET key:%d: %v", i, err)
		}
	}
	for i := range n {
		got, err := cc.Get(ctx, fmt.Sprintf("key:%d", i)).Int()
		if err != nil || got != i {
			t.Fatalf("GET key:%d = %d, %v", i, got, err)
		}
	}
	for _, node := range cl.Nodes() {
		size, err := do(node.Addr(), time.Second, "DBSIZE")
		if err != nil || size == "0" {
			t.Fatalf("node %s DBSIZE = %q, %v; want keys on every node", node.Addr(), size, err)
		}
	}

	// A script touching two keys in the same hash slot.
	const script = `redis.call('SET', KEYS[1], ARGV[1]); redis.call('SET', KEYS[2], ARGV[2]); return redis.call('MGET', KEYS[1], KEYS[2])`
	res, err := cc.Eval(ctx, script, []string{"{o:1}:a", "{o:1}:b"}, "x", "y").StringSlice()
	if err != nil || len(res) != 2 || res[0] != "x" || res[1] != "y" {
		t.Fatalf("EVAL with hash tag = %v, %v", res, err)
	}
	// Proof that this really is a cluster: keys in different slots fail.
	err = cc.Eval(ctx, script, []string{"{o:1}:a", "{o:2}:a"}, "x", "y").Err()
	if err == nil || !strings.Contains(err.Error(), "CROSSSLOT") {
		t.Fatalf("cross-slot EVAL err = %v, want CROSSSLOT", err)
	}

	// PUBLISH on any node reaches a subscriber connected via the cluster client.
	sub := cc.Subscribe(ctx, "anqi:news")
	t.Cleanup(func() { _ = sub.Close() })
	if _, err := sub.Receive(ctx); err != nil { // subscription confirmation
		t.Fatalf("SUBSCRIBE: %v", err)
	}
	ch := sub.Channel()
	want := map[string]bool{}
	for i, node := range cl.Nodes() {
		nc := node.Client(t)
		payload := fmt.Sprintf("hello from node %d", i)
		want[payload] = true
		if err := nc.Publish(ctx, "anqi:news", payload).Err(); err != nil {
			t.Fatalf("PUBLISH on %s: %v", node.Addr(), err)
		}
	}
	for len(want) > 0 {
		select {
		case msg := <-ch:
			delete(want, msg.Payload)
		case <-ctx.Done():
			t.Fatalf("messages not received: %v", want)
		}
	}

	// A killed node restarts on the same port with its slots and rejoins.
	node := cl.Nodes()[0]
	node.Kill()
	node.Restart(t)
	err = waitFor(ctx, 15*time.Second, func() error {
		info, err := do(node.Addr(), time.Second, "CLUSTER", "INFO")
		if err != nil {
			return err
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return fmt.Errorf("restarted node not ok:\n%s", info)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := cc.Set(ctx, "after-restart", "1", 0).Err(); err != nil {
		t.Fatalf("SET after node restart: %v", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("cluster test took %v, want < 20s", d)
	}
}
