package config

import (
	"strings"
	"testing"
)

// Issue 10, item 15: a request's headers may reach a realistic total
// (nginx's 32KiB) before anqi-edge refuses them.
func TestServerMaxHeaderBytes_DefaultsToNginxTotalAndIsValidatedByName(t *testing.T) {
	if got := Default().Server.MaxHeaderBytes; got != 32*KiB {
		t.Errorf("server.max_header_bytes default = %v, want 32KiB", got)
	}
	c, err := Parse([]byte("[server]\nmax_header_bytes = \"64KiB\""), nil)
	if err != nil || c.Server.MaxHeaderBytes != 64*KiB {
		t.Fatalf("max_header_bytes = \"64KiB\": %v, %v", c, err)
	}
	c, err = Parse(nil, []string{"ANQI_EDGE_SERVER_MAX_HEADER_BYTES=16KiB"})
	if err != nil || c.Server.MaxHeaderBytes != 16*KiB {
		t.Fatalf("ANQI_EDGE_SERVER_MAX_HEADER_BYTES=16KiB: %v", err)
	}
	for _, bad := range []string{"512", "0", "2MiB"} {
		_, err := Parse([]byte("[server]\nmax_header_bytes = \""+bad+"\""), nil)
		if err == nil || !strings.Contains(err.Error(), "server.max_header_bytes") {
			t.Errorf("max_header_bytes = %q: error %v, want one naming server.max_header_bytes", bad, err)
		}
	}
}
