package config

import (
	"bytes"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// FuzzParse feeds the loader arbitrary TOML and environment overrides. It
// must never panic; a config it accepts must validate, and must come back
// the same when written out as TOML and read again (what the operator sees
// in a dump is what runs).
func FuzzParse(f *testing.F) {
	shipped, err := os.ReadFile("../config.toml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(shipped, "")
	for _, s := range []struct{ toml, env string }{
		{"", ""},
		{"[redis]\naddrs = []", ""},
		{"[cache.memory]\nmax_bytes = 0\nttl = \"0s\"", ""},
		{"[cache]\njitter = 0.5\nttl = \"1m30s\"\nnegative_ttl = \"2s\"", ""},
		{"[upstream]\nmax_body = 1048576\nurl = \"https://cms.example.com/base\"", ""},
		{"[server]\nlisten = \"10.0.0.1:9000\"\n[admin]\nlisten = \"127.0.0.1:9000\"", ""},
		{"[auth.site_secrets]\n\"a.example.com\" = \"s1\"\n\"B.example.com:443\" = \"s2\"", ""},
		{"[[invalidate]]\nmethod = \"POST\"\npath = \"/a\"\nid = \"json:id\"", ""},
		{"[[invalidate]]\nmethod = \"POST\"\npath = \"/a\"\nid = \"form:\"", ""},
		{"invalidate = []", ""},
		{"[server]\nmax_request_body = \"32MiB\"", "ANQI_EDGE_SERVER_MAX_REQUEST_BODY=1KiB"},
		{"", "ANQI_EDGE_REDIS_ADDRS=a:1,b:2\nANQI_EDGE_CACHE_TTL=5s"},
		{"", "ANQI_EDGE_AUTH_SITE_SECRETS=a=b,c=d"},
		{"", "ANQI_EDGE_NOPE=1"},
		{"[cache]\njitter = nan", ""},
		{"[cache]\nttl = \"-1s\"", ""},
		{"[cdc]\naddr = \"127.0.0.1:3306\"", ""},
		{"x = [", ""},
	} {
		f.Add([]byte(s.toml), s.env)
	}
	f.Fuzz(func(t *testing.T, data []byte, env string) {
		var environ []string
		if env != "" {
			environ = strings.Split(env, "\n")
		}
		c, err := Parse(data, environ)
		if err != nil {
			if c != nil {
				t.Fatalf("error %v with a config", err)
			}
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Fatalf("error on more than one line: %q", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("accepted a config that does not validate: %v", err)
		}
		var out bytes.Buffer
		if err := toml.NewEncoder(&out).Encode(c); err != nil {
			t.Fatalf("accepted config does not encode: %v", err)
		}
		again, err := Parse(out.Bytes(), nil)
		if err != nil {
			t.Fatalf("accepted config, written out, is refused: %v\n%s", err, out.Bytes())
		}
		if !reflect.DeepEqual(c, again) {
			t.Fatalf("accepted config changes when written out and read again:\n%+v\n%+v\n%s", c, again, out.Bytes())
		}
	})
}

func TestParse_EnvValuesMustBeUTF8(t *testing.T) {
	for _, env := range []string{"ANQI_EDGE_REDIS_ADDRS=\xe8:1", "ANQI_EDGE_AUTH_TOKEN_SECRET=s\xff"} {
		_, err := Parse(nil, []string{env})
		if err == nil || !strings.Contains(err.Error(), "not valid UTF-8") || strings.Contains(err.Error(), "\xff") {
			t.Errorf("%q: %v, want a UTF-8 error naming the key without the value", env, err)
		}
	}
}

func TestParse_AnUnknownVariableIsNamedOnOneLine(t *testing.T) {
	_, err := Parse(nil, []string{"ANQI_EDGE_\r\nX=1"})
	if err == nil || strings.ContainsAny(err.Error(), "\r\n") || !strings.Contains(err.Error(), `"ANQI_EDGE_\r\nX"`) {
		t.Fatalf("%q, want the name quoted on one line", err)
	}
}
