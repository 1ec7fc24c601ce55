package config

import (
	"reflect"
	"strings"
)

// Diff lists the keys (dotted, as written in config.toml: "server.listen",
// "redis.addrs", "invalidate") whose values differ between a and b. A
// reload uses it to tell which changed keys it can apply and which need a
// restart.
func Diff(a, b *Config) []string {
	var out []string
	diffValue(reflect.ValueOf(*a), reflect.ValueOf(*b), "", &out)
	return out
}

func diffValue(a, b reflect.Value, prefix string, out *[]string) {
	if a.Kind() != reflect.Struct || isLeaf(a.Type()) {
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			*out = append(*out, prefix)
		}
		return
	}
	t := a.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		key := name
		if prefix != "" {
			key = prefix + "." + name
		}
		diffValue(a.Field(i), b.Field(i), key, out)
	}
}

// isLeaf reports whether a struct type is one value in config.toml (a
// duration or a size), not a section.
func isLeaf(t reflect.Type) bool {
	return t == reflect.TypeOf(Duration{}) || t == reflect.TypeOf(Size(0))
}
