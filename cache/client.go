package cache

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/redis/go-redis/v9"

	"anqi-edge/config"
)

// NewRedisClient builds the one go-redis client anqi-edge uses for c: the
// replica's tier, the purge command and "anqi-edge check" all connect the
// same way (standalone, Sentinel when redis.master_name is set, Cluster
// when redis.cluster is set or several addresses are given; TLS and ACL
// user when configured). It does not dial; the first command does.
func NewRedisClient(c config.Redis) (redis.UniversalClient, error) {
	if len(c.Addrs) == 0 {
		return nil, errors.New("redis.addrs is empty (Redis off)")
	}
	tlsConfig, err := RedisTLSConfig(c)
	if err != nil {
		return nil, err
	}
	return redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:         c.Addrs,
		MasterName:    c.MasterName,
		Username:      c.Username,
		Password:      c.Password,
		DB:            c.DB,
		IsClusterMode: c.Cluster,
		TLSConfig:     tlsConfig,
		DialTimeout:   c.DialTimeout.Duration,
		ReadTimeout:   c.Timeout.Duration,
		WriteTimeout:  c.Timeout.Duration,
		PoolTimeout:   c.Timeout.Duration,
		PoolSize:      c.PoolSize,
		// A dead Redis must cost one short timeout, not three retries of
		// one; the breaker takes it from there.
		MaxRetries: -1,
		// Without this go-redis ignores the request's deadline (DESIGN §9).
		ContextTimeoutEnabled: true,
	}), nil
}

// RedisTLSConfig is the client TLS configuration for c, or nil when
// redis.tls is off. The server certificate is checked against redis.tls_ca
// (else the system roots) for redis.tls_server_name (else the host of each
// address dialed: with Cluster, the node addresses Redis announces, so
// their certificates need those IPs or names, or set tls_server_name).
func RedisTLSConfig(c config.Redis) (*tls.Config, error) {
	if !c.TLS {
		return nil, nil
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: c.TLSServerName,
		// Tests only (config.toml says so): no certificate check at all.
		InsecureSkipVerify: c.TLSInsecureSkipVerify,
	}
	if c.TLSCA != "" {
		pem, err := os.ReadFile(c.TLSCA)
		if err != nil {
			return nil, fmt.Errorf("redis.tls_ca %q: %w", c.TLSCA, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("redis.tls_ca %q: no PEM CERTIFICATE block in the file", c.TLSCA)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}
