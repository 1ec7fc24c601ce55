package replica_test

import (
	"strings"
	"testing"

	"anqi-edge/config"
	"anqi-edge/replica"
)

// Issue 10, item 8: AnqiCMS routes from the root of its host, so an
// upstream.url with a path would be silently ignored; it is refused at
// start with a message naming the key.
func TestReplica_UpstreamURLWithAPathIsRefusedNamingTheKey(t *testing.T) {
	for _, u := range []string{"http://127.0.0.1:8001/cms", "http://127.0.0.1:8001/cms/", "https://anqicms.example/a/b"} {
		c := config.Default()
		c.Upstream.URL = u
		c.Redis.Addrs = nil
		c.Server.Listen = "127.0.0.1:0"
		c.Admin.Listen = "127.0.0.1:0"
		r, err := replica.New(c, nil)
		if err == nil {
			t.Fatalf("upstream.url %q: replica.New succeeded (%v), want it refused", u, r)
		}
		if msg := err.Error(); !strings.Contains(msg, "upstream.url") || !strings.Contains(msg, u) {
			t.Errorf("upstream.url %q: error %q does not name the key and the value", u, msg)
		}
	}
	// The root, with or without its slash, is fine.
	for _, u := range []string{"http://127.0.0.1:8001", "http://127.0.0.1:8001/"} {
		c := config.Default()
		c.Upstream.URL = u
		c.Redis.Addrs = nil
		if _, err := replica.New(c, nil); err != nil {
			t.Errorf("upstream.url %q: %v", u, err)
		}
	}
}
