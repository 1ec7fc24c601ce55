package config

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/BurntSushi/toml"
)

// EnvPrefix starts every environment variable that overrides a key:
// cache.memory.max_bytes is ANQI_EDGE_CACHE_MEMORY_MAX_BYTES.
const EnvPrefix = "ANQI_EDGE_"

// Load reads the TOML file at path over Default(), applies the ANQI_EDGE_*
// variables in environ (formatted like os.Environ()), and validates.
// File errors start with path; all others with "config: ".
func Load(path string, environ []string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err) // *PathError names the path
	}
	return parse(path, data, environ)
}

// Parse is Load for TOML already in memory; file errors start with "config".
func Parse(data []byte, environ []string) (*Config, error) {
	return parse("config", data, environ)
}

func parse(name string, data []byte, environ []string) (*Config, error) {
	c, err := decode(name, data)
	if err != nil {
		return nil, err
	}
	if err := applyEnv(c, environ); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// decode lays the TOML in data over Default(). name prefixes errors.
func decode(name string, data []byte) (*Config, error) {
	// Syntax first, into a plain map, so that a syntax error is never
	// reported against the last key that happened to parse.
	var syntax map[string]any
	if _, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&syntax); err != nil {
		return nil, fileError(name, err, false)
	}

	c := Default()
	// The decoder reuses slice elements in place, so a file rule that omits
	// a field would inherit it from a built-in rule. Start empty instead.
	c.Invalidate = nil
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(c)
	if err != nil {
		return nil, fileError(name, err, true)
	}
	if unknown := unknownKeys(md.Undecoded()); len(unknown) > 0 {
		if len(unknown) == 1 {
			return nil, fmt.Errorf("%s: unknown key %s", name, unknown[0])
		}
		return nil, fmt.Errorf("%s: unknown keys %s", name, strings.Join(unknown, ", "))
	}
	if !md.IsDefined("invalidate") {
		c.Invalidate = BuiltinRules()
	}
	if len(c.Auth.SiteSecrets) == 0 {
		c.Auth.SiteSecrets = nil // "[auth.site_secrets]" with no entries = default
	}
	return c, nil
}

// unknownKeys quotes the undecoded keys, leaving out those inside an
// unknown table (for "[cache.foo] bar = 1" only "cache.foo" is reported).
func unknownKeys(keys []toml.Key) []string {
	var out []string
	var tables []string
	for _, k := range keys {
		s := k.String()
		if slices.ContainsFunc(tables, func(t string) bool { return strings.HasPrefix(s, t+".") }) {
			continue
		}
		tables = append(tables, s)
		out = append(out, strconv.Quote(s))
	}
	return out
}

// tomlKeyError matches the decoder's type-mismatch errors,
// e.g. `toml: line 3 (last key "server.listen"): incompatible types: ...`.
var tomlKeyError = regexp.MustCompile(`^toml: (?:line (\d+) )?\(last key "([^"]*)"\): (.*)$`)

// fileError rewrites a decoder error as "name: line N: key: message" (key
// only when the error concerns a value, not the syntax), on one line.
func fileError(name string, err error, value bool) error {
	var msg string
	var pe toml.ParseError
	switch {
	case errors.As(err, &pe):
		msg = fmt.Sprintf("line %d: %s", pe.Position.Line, pe.Message)
		if value && pe.LastKey != "" {
			msg = fmt.Sprintf("line %d: %s: %s", pe.Position.Line, pe.LastKey, pe.Message)
		}
	default:
		msg = strings.TrimPrefix(err.Error(), "toml: ")
		if m := tomlKeyError.FindStringSubmatch(err.Error()); m != nil {
			msg = m[2] + ": " + m[3]
			if m[1] != "" {
				msg = "line " + m[1] + ": " + msg
			}
		}
	}
	return fmt.Errorf("%s: %s", name, oneLine(msg))
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// envKey is one scalar key that an environment variable can override.
type envKey struct {
	key   string        // "cache.memory.max_bytes"
	value reflect.Value // the settable field
}

// envName is the variable that overrides key: cache.memory.max_bytes is
// ANQI_EDGE_CACHE_MEMORY_MAX_BYTES.
func envName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// envKeys walks c by its toml tags and returns every key an environment
// variable can set, keyed by variable name. New fields get env support by
// being here; lists of tables ([[invalidate]]) are file-only.
func envKeys(c *Config) map[string]envKey {
	out := make(map[string]envKey)
	var walk func(v reflect.Value, prefix string)
	walk = func(v reflect.Value, prefix string) {
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
			if !f.IsExported() || name == "-" {
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			key := name
			if prefix != "" {
				key = prefix + "." + name
			}
			fv := v.Field(i)
			switch {
			case envSettable(fv):
				if prev, dup := out[envName(key)]; dup {
					panic("config: keys " + prev.key + " and " + key + " share env var " + envName(key))
				}
				out[envName(key)] = envKey{key: key, value: fv}
			case fv.Kind() == reflect.Struct:
				walk(fv, key)
			}
		}
	}
	walk(reflect.ValueOf(c).Elem(), "")
	return out
}

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

// envSettable reports whether setFromEnv can parse a value of v's type.
func envSettable(v reflect.Value) bool {
	if reflect.PointerTo(v.Type()).Implements(textUnmarshaler) {
		return true
	}
	switch v.Kind() {
	case reflect.String, reflect.Bool, reflect.Int, reflect.Int64, reflect.Float64:
		return true
	case reflect.Slice:
		return v.Type().Elem().Kind() == reflect.String
	case reflect.Map:
		return v.Type().Key().Kind() == reflect.String && v.Type().Elem().Kind() == reflect.String
	}
	return false
}

// applyEnv sets every key named by an ANQI_EDGE_ variable in environ. A
// variable that names no key is an error, so a typo never goes unnoticed.
func applyEnv(c *Config, environ []string) error {
	keys := envKeys(c)
	for _, kv := range environ {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, EnvPrefix) || serviceLink(name) {
			continue
		}
		k, ok := keys[name]
		if !ok {
			// The name is the environment's, not ours: quote it if it holds
			// anything that could break the one-line message.
			shown := name
			if strings.ContainsFunc(name, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
				shown = strconv.Quote(name)
			}
			return fmt.Errorf("config: unknown environment variable %s (no such key; keys map as section.key -> %sSECTION_KEY)", shown, EnvPrefix)
		}
		if !utf8.ValidString(value) {
			// A config file cannot hold such a value (TOML is UTF-8), and
			// no key means one: refuse it rather than run with bytes no
			// dump of the config can show. (FuzzParse found it.)
			return fmt.Errorf("config: %s: %s: value is not valid UTF-8", name, k.key)
		}
		if err := setFromEnv(k.value, value); err != nil {
			shown := strconv.Quote(value)
			if secretKeys[k.key] {
				shown = "(value hidden)"
			}
			return fmt.Errorf("config: %s=%s: %s: %v", name, shown, k.key, err)
		}
	}
	return nil
}

// serviceLink reports whether name is one of the variables Kubernetes
// injects for a Service called anqi-edge (ANQI_EDGE_PORT,
// ANQI_EDGE_PORT_8080_TCP_ADDR, ANQI_EDGE_SERVICE_HOST, ...). No config
// section is called "port" or "service", so they can never be meant as keys,
// and refusing them would crash-loop every pod in such a namespace.
func serviceLink(name string) bool {
	rest := strings.TrimPrefix(name, EnvPrefix)
	return rest == "PORT" || strings.HasPrefix(rest, "PORT_") || strings.HasPrefix(rest, "SERVICE_")
}

// secretKeys are never echoed in error messages.
var secretKeys = map[string]bool{
	"redis.password":    true,
	"admin.token":       true,
	"auth.token_secret": true,
	"auth.site_secrets": true,
	"cdc.password":      true,
}

// setFromEnv parses s into v. Lists are comma separated ("a:1,b:2"; "" is
// the empty list); maps are comma separated key=value pairs.
func setFromEnv(v reflect.Value, s string) error {
	if u, ok := v.Addr().Interface().(encoding.TextUnmarshaler); ok {
		return u.UnmarshalText([]byte(s))
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("invalid boolean (want true or false)")
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("invalid integer")
		}
		v.SetInt(n)
	case reflect.Float64:
		f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil {
			return fmt.Errorf("invalid number")
		}
		v.SetFloat(f)
	case reflect.Slice:
		list := reflect.MakeSlice(v.Type(), 0, 0)
		for _, item := range splitList(s) {
			list = reflect.Append(list, reflect.ValueOf(item))
		}
		v.Set(list)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		for i, item := range splitList(s) {
			k, val, ok := strings.Cut(item, "=")
			k, val = strings.TrimSpace(k), strings.TrimSpace(val)
			if !ok || k == "" {
				return fmt.Errorf("entry %d: want key=value", i+1)
			}
			m.SetMapIndex(reflect.ValueOf(k), reflect.ValueOf(val))
		}
		if m.Len() == 0 {
			m = reflect.Zero(v.Type())
		}
		v.Set(m)
	default:
		return fmt.Errorf("type %s cannot be set from the environment", v.Type())
	}
	return nil
}

// splitList splits "a, b,,c" into [a b c].
func splitList(s string) []string {
	var out []string
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}
