package deploy_test

// A strict parser for the subset of YAML that the files in deploy/ use, so
// the manifests are checked structurally without a YAML module (go.mod has
// none to import). Anything outside the subset is an error, never a guess:
// a construct this parser cannot read fails the test instead of being
// silently misread.
//
// Supported: block mappings and sequences (indented with spaces only),
// "- key: value" items, plain/'single'/"double" scalars, flow sequences of
// scalars ([a, "b"]), the empty flow mapping {}, literal block scalars (| and
// |-), comments, and "---" document separators. Not supported: tabs, anchors
// and aliases, tags, flow mappings with content, folded scalars, multi-line
// plain or quoted scalars, duplicate keys.

import (
	"fmt"
	"strconv"
	"strings"
)

type yamlLine struct {
	n      int    // 1-based line number
	indent int    // leading spaces
	text   string // content without indentation and trailing comment
}

type yamlParser struct {
	raw []string // the document's raw lines
	pos int      // next raw line
	off int      // line number of raw[0] minus one
}

// parseYAMLDocs parses every document in src.
func parseYAMLDocs(src string) ([]any, error) {
	if i := strings.IndexByte(src, '\t'); i >= 0 {
		return nil, fmt.Errorf("line %d: tab character (YAML indents with spaces)", strings.Count(src[:i], "\n")+1)
	}
	lines := strings.Split(strings.TrimSuffix(src, "\n"), "\n")
	var docs []any
	start := 0
	flush := func(end int) error {
		p := &yamlParser{raw: lines[start:end], off: start}
		if p.peek() == nil {
			return nil // empty document (comments only)
		}
		v, err := p.node(0)
		if err != nil {
			return err
		}
		if l := p.peek(); l != nil {
			return fmt.Errorf("line %d: unexpected %q (bad indentation?)", l.n, l.text)
		}
		docs = append(docs, v)
		return nil
	}
	for i, l := range lines {
		if strings.TrimRight(l, " ") == "---" {
			if err := flush(i); err != nil {
				return nil, err
			}
			start = i + 1
		}
	}
	if err := flush(len(lines)); err != nil {
		return nil, err
	}
	return docs, nil
}

// peek returns the next structural line (blank and comment lines skipped)
// without consuming it.
func (p *yamlParser) peek() *yamlLine {
	for i := p.pos; i < len(p.raw); i++ {
		t := strings.TrimLeft(p.raw[i], " ")
		if t == "" || t[0] == '#' {
			continue
		}
		p.pos = i
		return &yamlLine{n: p.off + i + 1, indent: len(p.raw[i]) - len(t), text: stripComment(t)}
	}
	p.pos = len(p.raw)
	return nil
}

// stripComment removes a " #..." comment outside quotes and trailing spaces.
func stripComment(t string) string {
	var quote byte
	for i := 0; i < len(t); i++ {
		c := t[i]
		switch {
		case quote != 0:
			if c == '\\' && quote == '"' {
				i++
			} else if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			if i == 0 || strings.ContainsRune(" [,:-", rune(t[i-1])) {
				quote = c
			}
		case c == '#' && i > 0 && t[i-1] == ' ':
			return strings.TrimRight(t[:i], " ")
		}
	}
	return strings.TrimRight(t, " ")
}

// node parses the block node at the next line, which must be indented at
// least min. A missing node is null.
func (p *yamlParser) node(min int) (any, error) {
	l := p.peek()
	if l == nil || l.indent < min {
		return nil, nil
	}
	if isSeqItem(l.text) {
		return p.seq(l.indent)
	}
	if _, _, ok := splitKey(l.text); ok {
		return p.mapping(l.indent)
	}
	p.pos++
	return scalar(l.text, l.n)
}

func isSeqItem(t string) bool { return t == "-" || strings.HasPrefix(t, "- ") }

func (p *yamlParser) mapping(indent int) (map[string]any, error) {
	m := map[string]any{}
	for {
		l := p.peek()
		if l == nil || l.indent < indent {
			return m, nil
		}
		if l.indent > indent {
			return nil, fmt.Errorf("line %d: unexpected indentation of %q", l.n, l.text)
		}
		key, rest, ok := splitKey(l.text)
		if !ok || isSeqItem(l.text) {
			return nil, fmt.Errorf("line %d: expected \"key: value\", got %q", l.n, l.text)
		}
		if _, dup := m[key]; dup {
			return nil, fmt.Errorf("line %d: duplicate key %q", l.n, key)
		}
		p.pos++
		var v any
		var err error
		switch {
		case rest == "|" || rest == "|-":
			v = p.literal(indent, rest == "|-")
		case rest != "":
			v, err = scalar(rest, l.n)
		default:
			// A nested block, or a sequence at the key's own indentation
			// ("key:\n- a"), which YAML allows for mapping values.
			if n := p.peek(); n != nil && n.indent == indent && isSeqItem(n.text) {
				v, err = p.seq(indent)
			} else {
				v, err = p.node(indent + 1)
			}
		}
		if err != nil {
			return nil, err
		}
		m[key] = v
	}
}

func (p *yamlParser) seq(indent int) ([]any, error) {
	var s []any
	for {
		l := p.peek()
		if l == nil || l.indent < indent || (l.indent == indent && !isSeqItem(l.text)) {
			return s, nil
		}
		if l.indent > indent {
			return nil, fmt.Errorf("line %d: unexpected indentation of %q", l.n, l.text)
		}
		if l.text == "-" {
			p.pos++
			v, err := p.node(indent + 1)
			if err != nil {
				return nil, err
			}
			s = append(s, v)
			continue
		}
		// "- item": re-read the item as if it started on its own line at
		// its column, so "- key: v" continues with lines at that column.
		item := strings.TrimLeft(l.text[1:], " ")
		col := l.indent + len(l.text) - len(item)
		p.raw[p.pos] = strings.Repeat(" ", col) + item
		v, err := p.node(col)
		if err != nil {
			return nil, err
		}
		s = append(s, v)
	}
}

// literal reads a | block scalar whose parent key sits at indent.
func (p *yamlParser) literal(indent int, strip bool) string {
	var b strings.Builder
	block := -1
	for p.pos < len(p.raw) {
		r := p.raw[p.pos]
		t := strings.TrimLeft(r, " ")
		if t != "" && len(r)-len(t) <= indent {
			break
		}
		p.pos++
		if t == "" {
			b.WriteByte('\n')
			continue
		}
		if block < 0 {
			block = len(r) - len(t)
		}
		if len(r)-len(t) < block {
			// Less indented than the first line: not part of this block.
			// Undo and stop; the caller reports the stray line.
			p.pos--
			break
		}
		b.WriteString(r[block:])
		b.WriteByte('\n')
	}
	s := strings.TrimRight(b.String(), "\n")
	if !strip && s != "" {
		s += "\n"
	}
	return s
}

// splitKey splits "key: rest" (or "key:"), the key plain or quoted.
func splitKey(t string) (key, rest string, ok bool) {
	if t == "" || strings.ContainsRune("[{&*!|>%@`", rune(t[0])) {
		return "", "", false
	}
	i := 0
	if t[0] == '"' || t[0] == '\'' {
		end := strings.IndexByte(t[1:], t[0])
		if end < 0 {
			return "", "", false
		}
		i = end + 2
		if i >= len(t) || t[i] != ':' {
			return "", "", false
		}
		k, err := unquote(t[:i])
		if err != nil {
			return "", "", false
		}
		key = k
	} else {
		for i < len(t) && !(t[i] == ':' && (i+1 == len(t) || t[i+1] == ' ')) {
			i++
		}
		if i == len(t) {
			return "", "", false
		}
		key = t[:i]
	}
	return key, strings.TrimLeft(t[i+1:], " "), true
}

func unquote(s string) (string, error) {
	if s[0] == '\'' {
		if len(s) < 2 || s[len(s)-1] != '\'' {
			return "", fmt.Errorf("unterminated quote in %s", s)
		}
		return strings.ReplaceAll(s[1:len(s)-1], "''", "'"), nil
	}
	return strconv.Unquote(s)
}

// scalar resolves one inline value: quoted strings stay strings; plain
// integers, booleans and null get their YAML types; [a, b] is a list.
func scalar(t string, n int) (any, error) {
	switch {
	case t == "{}":
		return map[string]any{}, nil
	case t == "[]":
		return []any{}, nil
	case t[0] == '[':
		if t[len(t)-1] != ']' {
			return nil, fmt.Errorf("line %d: flow sequence must end on its line: %q", n, t)
		}
		var out []any
		for _, part := range splitFlow(t[1 : len(t)-1]) {
			part = strings.TrimSpace(part)
			if part == "" || part[0] == '[' || part[0] == '{' {
				return nil, fmt.Errorf("line %d: unsupported flow item %q", n, part)
			}
			v, err := scalar(part, n)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case strings.ContainsRune("{&*!|>%@`", rune(t[0])):
		return nil, fmt.Errorf("line %d: unsupported YAML construct %q", n, t)
	case t[0] == '"' || t[0] == '\'':
		s, err := unquote(t)
		if err != nil {
			return nil, fmt.Errorf("line %d: bad quoted string %s: %v", n, t, err)
		}
		return s, nil
	}
	switch t {
	case "true":
		return true, nil
	case "false":
		return false, nil
	case "null", "~":
		return nil, nil
	}
	if i, err := strconv.ParseInt(t, 10, 64); err == nil {
		return i, nil
	}
	if strings.Contains(t, ": ") || strings.HasSuffix(t, ":") {
		return nil, fmt.Errorf("line %d: a plain scalar cannot contain \": \": %q", n, t)
	}
	return t, nil
}

// splitFlow splits a flow sequence body on commas outside quotes.
func splitFlow(s string) []string {
	var parts []string
	var quote byte
	start := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case quote != 0:
			if c == '\\' && quote == '"' {
				i++
			} else if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == ',':
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}

// Path helpers over parsed YAML: get(v, "spec", "template", 0, "name").

func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			s, ok := v.([]any)
			if !ok || k >= len(s) {
				return nil
			}
			v = s[k]
		}
	}
	return v
}

func getMap(v any, path ...any) map[string]any {
	m, _ := get(v, path...).(map[string]any)
	return m
}

func getList(v any, path ...any) []any {
	s, _ := get(v, path...).([]any)
	return s
}

func getString(v any, path ...any) string {
	s, _ := get(v, path...).(string)
	return s
}

func getInt(v any, path ...any) (int64, bool) {
	i, ok := get(v, path...).(int64)
	return i, ok
}
