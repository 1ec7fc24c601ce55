package cache

// Tests of NewRedisClient against real redis-server processes: over TLS
// with a CA made at test time, and as an ACL user allowed only the
// commands anqi-edge sends.

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"anqi-edge/config"
	"anqi-edge/internal/redistest"
	"anqi-edge/internal/testcert"
	"anqi-edge/metrics"
)

// aclRules is the smallest ACL anqi-edge runs with (README documents it),
// for the default redis.key_prefix "ae" and redis.channel
// "anqi-edge:invalidate". Commands inside the Lua scripts are checked too,
// so they are listed. cluster|slots and cluster|info are for Cluster only.
const aclRules = "resetkeys ~ae:* ~{ae:epoch}:restarted resetchannels &anqi-edge:invalidate* -@all " +
	"+ping +get +mget +evalsha +eval +script|load +publish +subscribe +info " +
	"+incr +set +del +exists +time +sadd +smembers +sismember +scard +pttl +pexpire " +
	"+cluster|slots +cluster|info"

func clientConfig(addr string) config.Redis {
	c := config.Default().Redis
	c.Addrs = []string{addr}
	c.Timeout = config.Duration{Duration: 2 * time.Second} // a busy 2-core CI box
	c.DialTimeout = config.Duration{Duration: 2 * time.Second}
	return c
}

// tierWith is a replica's tier on a client built by NewRedisClient.
func tierWith(t *testing.T, c config.Redis, replica string) *tier {
	t.Helper()
	client, err := NewRedisClient(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	tr := &tier{m: metrics.New(nil), c: client}
	tr.r = NewRedis(RedisOptions{
		Client: client, Prefix: c.KeyPrefix, Channel: c.Channel, ReplicaID: replica,
		BreakerCooldown:    100 * time.Millisecond,
		OnRemoteInvalidate: func(order int64) { tr.mu.Lock(); tr.remote = append(tr.remote, order); tr.mu.Unlock() },
		OnClear:            func() { tr.clears.Add(1) },
		Metrics:            tr.m,
		Log:                discardLog,
	})
	return tr
}

// exerciseTier runs what a replica does with Redis: read, fill, invalidate
// (heard by the other replica over pub/sub), refill, and an epoch bump.
func exerciseTier(t *testing.T, a, b *tier) {
	t.Helper()
	a.run(t)
	b.run(t)
	waitSubscribed(t, a, b)
	k := testKey(42, "alice")
	if _, ok := get(t, a, k); ok {
		t.Fatal("entry before any fill")
	}
	fill(t, a, k, `{"code":0,"data":{"id":42}}`)
	if body, ok := get(t, b, k); !ok || body != `{"code":0,"data":{"id":42}}` {
		t.Fatalf("the other replica reads %q %v", body, ok)
	}
	if queued, err := a.r.Invalidate(ctxT(t), 42); err != nil || queued {
		t.Fatalf("invalidate: queued=%v err=%v", queued, err)
	}
	eventually(t, "replica B hears the invalidation", func() bool { return b.heard(42) })
	if _, ok := get(t, b, k); ok {
		t.Fatal("entry still there after invalidation")
	}
	fill(t, b, k, `{"code":0,"data":{"id":42,"v":2}}`)
	if !a.r.applyQueued(ctxT(t), map[int64]struct{}{}, true) {
		t.Fatal("epoch bump failed")
	}
	eventually(t, "replica B adopts the new epoch", func() bool { return b.r.epoch() == a.r.epoch() && a.r.epoch() > 0 })
	if _, ok := get(t, b, k); ok {
		t.Fatal("entry of the old epoch still read")
	}
	if n := a.metric("anqi_edge_redis_errors_total") + b.metric("anqi_edge_redis_errors_total"); n != 0 {
		t.Fatalf("%v Redis errors while exercising the tier", n)
	}
}

// tlsRedis starts a TLS-only redis-server whose certificate a test CA signed
// for 127.0.0.1 and redis.test.
func tlsRedis(t *testing.T) (addr, caFile string) {
	t.Helper()
	dir := t.TempDir()
	ca := testcert.NewCA(t)
	caFile = ca.WriteCA(t, dir)
	certFile, keyFile := ca.Issue(t, "redis.test", "127.0.0.1").Write(t, dir, "redis")
	s := redistest.StartTLS(t, redistest.TLSFiles{Cert: certFile, Key: keyFile, CA: caFile},
		&tls.Config{RootCAs: ca.Pool(), ServerName: "redis.test"})
	return s.Addr(), caFile
}

func TestRedisClient_TLSAndACLUserRunTheWholeCacheTier(t *testing.T) {
	addr, caFile := tlsRedis(t)
	c := clientConfig(addr)
	c.TLS, c.TLSCA = true, caFile

	// The default user sets up the restricted one, as an operator would.
	admin, err := NewRedisClient(c)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	args := []any{"ACL", "SETUSER", "edge", "reset", "on", ">s3cret"}
	for _, r := range strings.Fields(aclRules) {
		args = append(args, r)
	}
	if err := admin.Do(ctxT(t), args...).Err(); err != nil {
		t.Fatalf("ACL SETUSER: %v", err)
	}

	c.Username, c.Password = "edge", "s3cret"
	exerciseTier(t, tierWith(t, c, "A"), tierWith(t, c, "B"))

	// The user really is restricted: nothing outside its keys, no admin.
	edge, _ := NewRedisClient(c)
	defer edge.Close()
	if err := edge.Get(ctxT(t), "other:key").Err(); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Fatalf("GET outside ae:*: %v, want NOPERM", err)
	}
	if err := edge.FlushAll(ctxT(t)).Err(); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Fatalf("FLUSHALL: %v, want NOPERM", err)
	}
	c.Password = "wrong"
	bad, _ := NewRedisClient(c)
	defer bad.Close()
	if err := bad.Ping(ctxT(t)).Err(); err == nil || !strings.Contains(err.Error(), "WRONGPASS") {
		t.Fatalf("wrong password: %v", err)
	}
}

func TestRedisClient_TLSVerifiesTheServerCertificate(t *testing.T) {
	addr, caFile := tlsRedis(t)
	ping := func(c config.Redis) error {
		client, err := NewRedisClient(c)
		if err != nil {
			return err
		}
		defer client.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return client.Ping(ctx).Err()
	}
	c := clientConfig(addr)
	c.TLS = true
	if err := ping(c); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("without redis.tls_ca (system roots): %v, want a certificate error", err)
	}
	c.TLSCA = caFile
	if err := ping(c); err != nil {
		t.Fatalf("with redis.tls_ca: %v", err)
	}
	c.TLSServerName = "other.test"
	if err := ping(c); err == nil || !strings.Contains(err.Error(), "other.test") {
		t.Fatalf("redis.tls_server_name not in the certificate: %v", err)
	}
	c.TLSServerName = "redis.test"
	if err := ping(c); err != nil {
		t.Fatalf("redis.tls_server_name in the certificate: %v", err)
	}
	c.TLSCA, c.TLSServerName, c.TLSInsecureSkipVerify = "", "", true
	if err := ping(c); err != nil {
		t.Fatalf("redis.tls_insecure_skip_verify: %v", err)
	}
	c = clientConfig(addr) // plain client on the TLS-only port
	if err := ping(c); err == nil {
		t.Fatal("a plain client got an answer from the TLS-only port")
	}
}

func TestRedisClient_TLSCAErrorsNameTheKey(t *testing.T) {
	c := clientConfig("127.0.0.1:1")
	c.TLS, c.TLSCA = true, t.TempDir()+"/none.pem"
	if _, err := NewRedisClient(c); err == nil || !strings.Contains(err.Error(), "redis.tls_ca") {
		t.Fatalf("missing CA file: %v", err)
	}
	if _, err := NewRedisClient(config.Redis{}); err == nil || !strings.Contains(err.Error(), "redis.addrs") {
		t.Fatalf("no addresses: %v", err)
	}
}
