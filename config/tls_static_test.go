package config

import (
	"strings"
	"testing"
)

func TestParse_TLSStaticErrorsNameTheKey(t *testing.T) {
	tests := []struct {
		name string
		toml string
		env  []string
		want []string
	}{
		{"cert without key", "[server]\ntls_cert = \"/etc/ssl/a.pem\"", nil, []string{"config: server.tls_key:", `"/etc/ssl/a.pem"`}},
		{"key without cert", "[server]\ntls_key = \"/etc/ssl/a.key\"", nil, []string{"config: server.tls_cert:", `"/etc/ssl/a.key"`}},
		{"redirect without tls", "[server]\nredirect_http = \":80\"", nil, []string{"config: server.redirect_http:", "server.tls_cert", `":80"`}},
		{"redirect bad address", "[server]\ntls_cert = \"c\"\ntls_key = \"k\"\nredirect_http = \"80\"", nil, []string{"config: server.redirect_http:", `"80"`}},
		{"redirect on the tls port", "[server]\nlisten = \":8443\"\ntls_cert = \"c\"\ntls_key = \"k\"\nredirect_http = \"127.0.0.1:8443\"", nil, []string{"config: server.redirect_http:", "server.listen"}},
		{"redirect on the admin port", "[server]\ntls_cert = \"c\"\ntls_key = \"k\"\nredirect_http = \"127.0.0.1:9090\"", nil, []string{"config: server.redirect_http:", "admin.listen"}},
		{"redis ca without tls", "[redis]\ntls_ca = \"/ca.pem\"", nil, []string{"config: redis.tls_ca:", "redis.tls = false"}},
		{"redis server name without tls", "[redis]\ntls_server_name = \"r.example\"", nil, []string{"config: redis.tls_server_name:"}},
		{"redis skip verify without tls", "[redis]\ntls_insecure_skip_verify = true", nil, []string{"config: redis.tls_insecure_skip_verify:"}},
		{"redis skip verify with ca", "[redis]\ntls = true\ntls_ca = \"/ca.pem\"\ntls_insecure_skip_verify = true", nil, []string{"config: redis.tls_insecure_skip_verify:", "redis.tls_ca"}},
		{"static root blank", "[static]\nroot = \"  \"", nil, []string{"config: static.root:"}},
		{"env bad redis tls", "", []string{"ANQI_EDGE_REDIS_TLS=yes"}, []string{"ANQI_EDGE_REDIS_TLS", "redis.tls"}},
		{"unknown static key", "[static]\nroots = \"/srv\"", nil, []string{`unknown key "static.roots"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.toml), tt.env)
			if err == nil {
				t.Fatalf("Parse succeeded, want error containing %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestParse_TLSStaticAccepted(t *testing.T) {
	c, err := Parse([]byte(`
[server]
listen = ":443"
tls_cert = "/etc/anqi-edge/fullchain.pem"
tls_key = "/etc/anqi-edge/privkey.pem"
redirect_http = ":80"
[redis]
tls = true
tls_ca = "/etc/anqi-edge/redis-ca.pem"
tls_server_name = "redis.internal"
[static]
root = "/www/anqicms/public"
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.TLSCert != "/etc/anqi-edge/fullchain.pem" || c.Server.TLSKey != "/etc/anqi-edge/privkey.pem" ||
		c.Server.RedirectHTTP != ":80" || !c.Redis.TLS || c.Redis.TLSCA != "/etc/anqi-edge/redis-ca.pem" ||
		c.Redis.TLSServerName != "redis.internal" || c.Static.Root != "/www/anqicms/public" {
		t.Fatalf("keys not decoded: %+v %+v %+v", c.Server, c.Redis, c.Static)
	}
}

func TestParse_TLSStaticEnvOverrides(t *testing.T) {
	c, err := Parse(nil, []string{
		"ANQI_EDGE_SERVER_TLS_CERT=/c.pem", "ANQI_EDGE_SERVER_TLS_KEY=/k.pem", "ANQI_EDGE_SERVER_REDIRECT_HTTP=:8081",
		"ANQI_EDGE_REDIS_TLS=true", "ANQI_EDGE_REDIS_TLS_CA=/ca.pem", "ANQI_EDGE_REDIS_TLS_SERVER_NAME=r",
		"ANQI_EDGE_STATIC_ROOT=/srv/public",
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.TLSCert != "/c.pem" || c.Server.TLSKey != "/k.pem" || c.Server.RedirectHTTP != ":8081" ||
		!c.Redis.TLS || c.Redis.TLSCA != "/ca.pem" || c.Redis.TLSServerName != "r" || c.Static.Root != "/srv/public" {
		t.Fatalf("env not applied: %+v %+v %+v", c.Server, c.Redis, c.Static)
	}
}
