package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration written as a Go duration string in TOML and
// env ("500ms", "5s", "1h30m"). Negative durations are rejected.
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string such as "5s" or "1h30m".
func (d *Duration) UnmarshalText(text []byte) error {
	s := strings.TrimSpace(string(text))
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q (want e.g. \"500ms\", \"5s\", \"1h30m\")", string(text))
	}
	if v < 0 {
		return fmt.Errorf("duration must not be negative, got %q", string(text))
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration as time.Duration.String does ("1m30s").
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(d.String()), nil
}

// Size is a number of bytes. In TOML and env it is an integer or a string
// with a unit: "100B", "512KiB", "256MiB", "1GiB" (binary, powers of 1024)
// or "8KB", "8MB", "1GB" (decimal, powers of 1000); units are
// case-insensitive. Negative sizes and fractions are rejected.
type Size int64

// Size units.
const (
	B   Size = 1
	KiB Size = 1 << 10
	MiB Size = 1 << 20
	GiB Size = 1 << 30
	TiB Size = 1 << 40
	KB  Size = 1000
	MB  Size = 1000 * KB
	GB  Size = 1000 * MB
	TB  Size = 1000 * GB
)

// sizeUnits lists the units String may print, binary first so that a tie
// (no tie is possible except for 0) prefers binary.
var sizeUnits = []struct {
	name string
	size Size
}{
	{"TiB", TiB}, {"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB},
	{"TB", TB}, {"GB", GB}, {"MB", MB}, {"KB", KB},
}

// UnmarshalText parses "256MiB", "8MB", "100B" or a plain byte count "1024".
func (s *Size) UnmarshalText(text []byte) error {
	v, err := ParseSize(string(text))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// MarshalText writes the size as String does.
func (s Size) MarshalText() ([]byte, error) {
	return []byte(s.String()), nil
}

// String writes the size with the unit that gives the smallest whole
// number: 256MiB, 8MB, 1KiB, 100B. ParseSize reads it back exactly.
func (s Size) String() string {
	if s <= 0 {
		return strconv.FormatInt(int64(s), 10) + "B"
	}
	best, bestN := "B", int64(s)
	for _, u := range sizeUnits {
		if s%u.size == 0 && int64(s/u.size) < bestN {
			best, bestN = u.name, int64(s/u.size)
		}
	}
	return strconv.FormatInt(bestN, 10) + best
}

// ParseSize parses a size as Size.UnmarshalText does.
func ParseSize(text string) (Size, error) {
	s := strings.TrimSpace(text)
	digits := 0
	for digits < len(s) && s[digits] >= '0' && s[digits] <= '9' {
		digits++
	}
	if strings.HasPrefix(s, "-") {
		return 0, fmt.Errorf("size must not be negative, got %q", text)
	}
	if digits == 0 {
		return 0, fmt.Errorf("invalid size %q (want e.g. \"256MiB\", \"8MB\", \"1024\")", text)
	}
	n, err := strconv.ParseInt(s[:digits], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q is too large", text)
	}
	unit := strings.TrimSpace(s[digits:])
	if strings.HasPrefix(unit, ".") {
		return 0, fmt.Errorf("invalid size %q: fractions are not supported (write e.g. \"1536MiB\" for 1.5GiB)", text)
	}
	mult := B
	switch strings.ToLower(unit) {
	case "", "b":
	case "kib":
		mult = KiB
	case "mib":
		mult = MiB
	case "gib":
		mult = GiB
	case "tib":
		mult = TiB
	case "kb":
		mult = KB
	case "mb":
		mult = MB
	case "gb":
		mult = GB
	case "tb":
		mult = TB
	default:
		return 0, fmt.Errorf("invalid size %q: unknown unit %q (want B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)", text, unit)
	}
	if n > math.MaxInt64/int64(mult) {
		return 0, fmt.Errorf("size %q is too large", text)
	}
	return Size(n) * mult, nil
}
