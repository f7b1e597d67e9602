package config

import (
	"fmt"
	"math"
	"strconv"
	"time"

	toml "github.com/pelletier/go-toml/v2"
)

// decodeScalar decodes one raw TOML value (as handed to UnmarshalTOML)
// into a Go value: string, int64, float64, bool, []any, map[string]any or
// a time value.
func decodeScalar(raw []byte) (any, error) {
	var doc struct {
		V any `toml:"v"`
	}
	src := make([]byte, 0, len(raw)+4)
	src = append(append(src, "v = "...), raw...)
	if err := toml.Unmarshal(src, &doc); err != nil {
		return nil, fmt.Errorf("invalid value %s", raw)
	}
	return doc.V, nil
}

// valueError is returned by the UnmarshalTOML methods. raw is the slice
// the decoder handed over, which points into the document: Parse uses it
// to find the line.
type valueError struct {
	raw []byte
	msg string
}

func (e *valueError) Error() string { return e.msg }

// valueSetter is implemented by the types with their own TOML decoding.
type valueSetter interface {
	fromValue(raw []byte, v any) error
}

func unmarshalWith(s valueSetter, raw []byte) error {
	v, err := decodeScalar(raw)
	if err != nil {
		return valueErr(raw, "%v", err)
	}
	return s.fromValue(raw, v)
}

func valueErr(raw []byte, format string, args ...any) error {
	return &valueError{raw: raw, msg: fmt.Sprintf(format, clipArgs(args)...)}
}

func tomlKind(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case int64:
		return "integer"
	case float64:
		return "float"
	case bool:
		return "boolean"
	case []any:
		return "array"
	case map[string]any:
		return "table"
	default:
		return "date/time"
	}
}

// Duration is a time.Duration written as a Go duration string ("15m",
// "1h30m"). A bare integer is read as seconds.
type Duration struct {
	time.Duration
}

// UnmarshalTOML implements go-toml's unstable.Unmarshaler.
func (d *Duration) UnmarshalTOML(raw []byte) error { return unmarshalWith(d, raw) }

func (d *Duration) fromValue(raw []byte, v any) error {
	switch x := v.(type) {
	case string:
		p, err := time.ParseDuration(x)
		if err != nil {
			return valueErr(raw, "invalid duration %q: use a Go duration such as \"90s\", \"15m\" or \"1h30m\"", x)
		}
		d.Duration = p
	case int64:
		if x > math.MaxInt64/int64(time.Second) || x < math.MinInt64/int64(time.Second) {
			return valueErr(raw, "duration %d seconds is out of range", x)
		}
		d.Duration = time.Duration(x) * time.Second
	default:
		return valueErr(raw, "expected a duration string such as \"15m\", got %s", tomlKind(v))
	}
	return nil
}

// MarshalText writes the duration as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	p, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q", b)
	}
	d.Duration = p
	return nil
}

// DurationPtr returns a *Duration for d.
func DurationPtr(d time.Duration) *Duration { return &Duration{Duration: d} }

// Get returns the duration, or def when d is nil.
func (d *Duration) Get(def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return d.Duration
}

// StringOrList accepts a single string or an array of strings
// (pull_policy = "always" or pull_policy = ["always", "if-not-present"]).
type StringOrList []string

// UnmarshalTOML implements go-toml's unstable.Unmarshaler.
func (s *StringOrList) UnmarshalTOML(raw []byte) error { return unmarshalWith(s, raw) }

func (s *StringOrList) fromValue(raw []byte, v any) error {
	switch x := v.(type) {
	case string:
		*s = StringOrList{x}
	case []any:
		out := make(StringOrList, 0, len(x))
		for i, e := range x {
			str, ok := e.(string)
			if !ok {
				return valueErr(raw, "element %d: expected a string, got %s", i, tomlKind(e))
			}
			out = append(out, str)
		}
		*s = out
	default:
		return valueErr(raw, "expected a string or an array of strings, got %s", tomlKind(v))
	}
	return nil
}

// Quantity is a Kubernetes resource quantity ("512Mi", "0.5", "2").
// Numbers are accepted as well as strings. Validated by Parse.
type Quantity string

// UnmarshalTOML implements go-toml's unstable.Unmarshaler.
func (q *Quantity) UnmarshalTOML(raw []byte) error { return unmarshalWith(q, raw) }

func (q *Quantity) fromValue(raw []byte, v any) error {
	switch x := v.(type) {
	case string:
		*q = Quantity(x)
	case int64:
		*q = Quantity(strconv.FormatInt(x, 10))
	case float64:
		*q = Quantity(strconv.FormatFloat(x, 'f', -1, 64))
	default:
		return valueErr(raw, "expected a quantity such as \"512Mi\" or \"0.5\", got %s", tomlKind(v))
	}
	return nil
}

// Pattern is a regular expression (the *_overwrite_allowed keys). Empty
// means "overwrite disabled". Validated by Parse.
type Pattern string
