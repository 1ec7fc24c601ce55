package config

import "strings"

// Static serves files from AnqiCMS's public/ directory the way AnqiCMS's
// nginx guides do (try_files $uri @anqicms): a GET or HEAD whose path is a
// regular file under Root is answered from disk, everything else goes to
// AnqiCMS.
type Static struct {
	// Root is AnqiCMS's public/ directory; "" = off (everything is
	// forwarded). Default "".
	Root string `toml:"root"`
}

// validateTLSStatic checks the keys added for TLS, the https redirect,
// Redis over TLS and static files. Files are not opened here: "anqi-edge
// check" and start-up do that, naming the same keys.
func (c *Config) validateTLSStatic(v *validator) {
	s := c.Server
	switch {
	case s.TLSCert != "" && s.TLSKey == "":
		v.fail("server.tls_key", "must be set when server.tls_cert is (the PEM private key of %q), got %q", s.TLSCert, s.TLSKey)
	case s.TLSKey != "" && s.TLSCert == "":
		v.fail("server.tls_cert", "must be set when server.tls_key is (the PEM certificate for %q), got %q", s.TLSKey, s.TLSCert)
	}
	if s.RedirectHTTP != "" {
		v.listen("server.redirect_http", s.RedirectHTTP)
		if s.TLSCert == "" {
			v.fail("server.redirect_http", "redirects to https, so it needs server.tls_cert and server.tls_key; got %q without them", s.RedirectHTTP)
		}
		if v.err == nil && listenersCollide(s.RedirectHTTP, s.Listen) {
			v.fail("server.redirect_http", "must not share the port of server.listen %q, got %q", s.Listen, s.RedirectHTTP)
		}
		if v.err == nil && listenersCollide(s.RedirectHTTP, c.Admin.Listen) {
			v.fail("server.redirect_http", "must not share the port of admin.listen %q, got %q", c.Admin.Listen, s.RedirectHTTP)
		}
	}

	r := c.Redis
	if !r.TLS {
		switch {
		case r.TLSCA != "":
			v.fail("redis.tls_ca", "only applies with redis.tls = true, got %q with redis.tls = false", r.TLSCA)
		case r.TLSServerName != "":
			v.fail("redis.tls_server_name", "only applies with redis.tls = true, got %q with redis.tls = false", r.TLSServerName)
		case r.TLSInsecureSkipVerify:
			v.fail("redis.tls_insecure_skip_verify", "only applies with redis.tls = true, got true with redis.tls = false")
		}
	}
	if r.TLSInsecureSkipVerify && r.TLSCA != "" {
		v.fail("redis.tls_insecure_skip_verify", "cannot be combined with redis.tls_ca %q (it would ignore the CA), got true", r.TLSCA)
	}

	if c.Static.Root != "" && strings.TrimSpace(c.Static.Root) == "" {
		v.fail("static.root", "must be a directory path or \"\" (off), got %q", c.Static.Root)
	}
}
