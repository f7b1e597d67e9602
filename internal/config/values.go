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
	if err := toml.Unmarshal(append([]byte("v = "), raw...), &doc); err != nil {
		return nil, fmt.Errorf("invalid value %s", raw)
	}
	return doc.V, nil
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
func (d *Duration) UnmarshalTOML(raw []byte) error {
	v, err := decodeScalar(raw)
	if err != nil {
		return err
	}
	switch x := v.(type) {
	case string:
		p, err := time.ParseDuration(x)
		if err != nil {
			return fmt.Errorf("invalid duration %q: use a Go duration such as \"90s\", \"15m\" or \"1h30m\"", x)
		}
		d.Duration = p
	case int64:
		if x > math.MaxInt64/int64(time.Second) || x < math.MinInt64/int64(time.Second) {
			return fmt.Errorf("duration %d seconds is out of range", x)
		}
		d.Duration = time.Duration(x) * time.Second
	default:
		return fmt.Errorf("expected a duration string such as \"15m\", got %s", tomlKind(v))
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
func (s *StringOrList) UnmarshalTOML(raw []byte) error {
	v, err := decodeScalar(raw)
	if err != nil {
		return err
	}
	switch x := v.(type) {
	case string:
		*s = StringOrList{x}
	case []any:
		out := make(StringOrList, 0, len(x))
		for i, e := range x {
			str, ok := e.(string)
			if !ok {
				return fmt.Errorf("element %d: expected a string, got %s", i, tomlKind(e))
			}
			out = append(out, str)
		}
		*s = out
	default:
		return fmt.Errorf("expected a string or an array of strings, got %s", tomlKind(v))
	}
	return nil
}

// Quantity is a Kubernetes resource quantity ("512Mi", "0.5", "2").
// Numbers are accepted as well as strings. Validated by Parse.
type Quantity string

// UnmarshalTOML implements go-toml's unstable.Unmarshaler.
func (q *Quantity) UnmarshalTOML(raw []byte) error {
	v, err := decodeScalar(raw)
	if err != nil {
		return err
	}
	switch x := v.(type) {
	case string:
		*q = Quantity(x)
	case int64:
		*q = Quantity(strconv.FormatInt(x, 10))
	case float64:
		*q = Quantity(strconv.FormatFloat(x, 'f', -1, 64))
	default:
		return fmt.Errorf("expected a quantity such as \"512Mi\" or \"0.5\", got %s", tomlKind(v))
	}
	return nil
}

// Pattern is a regular expression (the *_overwrite_allowed keys). Empty
// means "overwrite disabled". Validated by Parse.
type Pattern string
