package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"unicode/utf8"

	toml "github.com/pelletier/go-toml/v2"
)

// Error is one problem in a config file, pointing at file:line and the key.
type Error struct {
	File string
	Line int    // 0 when unknown
	Key  string // e.g. "runners[0].executor"; empty for syntax errors
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Warning is a non-fatal finding (unknown key, deprecated form).
type Warning struct {
	File string
	Line int
	Key  string
	Msg  string
}

func (w Warning) String() string {
	return (&Error{File: w.File, Line: w.Line, Key: w.Key, Msg: w.Msg}).Error()
}

// Load reads and parses path. A missing file returns an error wrapping
// fs.ErrNotExist.
func Load(path string) (*Config, []Warning, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(data, path)
}

// New returns an empty config with GitLab Runner's defaults.
func New() *Config {
	return &Config{
		Concurrent:      DefaultConcurrent,
		CheckInterval:   DefaultCheckInterval,
		ShutdownTimeout: DefaultShutdownTimeout,
	}
}

// Parse decodes data (named filename in messages), applies defaults and
// validates. The error, when not nil, lists every problem found, one per
// line, each as "file:line: key: message" (see Error; errors.As works
// for *Error on the joined error).
func Parse(data []byte, filename string) (*Config, []Warning, error) {
	return parse(data, filename, false)
}

// ParseRunnerTemplate parses a --template-config file: a config.toml whose
// first [[runners]] entry holds defaults for a runner being registered.
// Its url, token and executor may be left out. It returns nil when the
// file has no [[runners]].
func ParseRunnerTemplate(data []byte, filename string) (*Runner, []Warning, error) {
	cfg, warnings, err := parse(data, filename, true)
	if err != nil || len(cfg.Runners) == 0 {
		return nil, warnings, err
	}
	return cfg.Runners[0], warnings, nil
}

func parse(data []byte, filename string, template bool) (*Config, []Warning, error) {
	idx := buildIndex(data)
	cfg := New()
	p := &parser{file: filename, idx: idx, template: template}

	dec := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields().EnableUnmarshalerInterface()
	if err := dec.Decode(cfg); err != nil {
		var strict *toml.StrictMissingError
		var de *toml.DecodeError
		switch {
		case errors.As(err, &strict):
			for i := range strict.Errors {
				line, col := strict.Errors[i].Position()
				key := idx.keyAt(line, col)
				if key == "" {
					key = strings.Join(strict.Errors[i].Key(), ".")
				}
				p.warn(key, line, "unknown key, ignored (check the spelling and the table it is in)")
			}
		case errors.As(err, &de):
			line, col := de.Position()
			key := idx.keyAt(line, col)
			if key == "" && len(de.Key()) > 0 {
				key = strings.Join(de.Key(), ".")
			}
			return nil, p.warnings, &Error{File: filename, Line: line, Key: key, Msg: decodeMessage(de)}
		default:
			e := &Error{File: filename, Msg: err.Error()}
			var ve *valueError
			if errors.As(err, &ve) {
				e.Msg = ve.msg
				if kv, ok := idx.locateValueError(ve.msg); ok {
					e.Line, e.Key = kv.line, kv.path
				}
			}
			return nil, p.warnings, e
		}
	}
	p.normalize(cfg)
	if err := p.validate(cfg); err != nil {
		return nil, p.warnings, err
	}
	return cfg, p.warnings, nil
}

var typeMismatch = regexp.MustCompile(`^cannot decode TOML (\w+) into (?:struct field \S+ of type |a Go value of type )?(.+)$`)

// decodeMessage turns go-toml's message into one for a config author.
func decodeMessage(de *toml.DecodeError) string {
	msg := strings.TrimPrefix(de.Error(), "toml: ")
	if strings.HasPrefix(msg, "parsing time ") {
		return "invalid date-time: use RFC 3339, e.g. 2026-01-02T15:04:05Z"
	}
	if m := typeMismatch.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("wrong type: got a TOML %s, want %s", m[1], goTypeName(m[2]))
	}
	return msg
}

func goTypeName(t string) string {
	switch {
	case strings.HasPrefix(t, "int"), strings.HasPrefix(t, "*int"), strings.HasPrefix(t, "uint"):
		return "an integer"
	case t == "string", t == "*string", t == "config.Pattern":
		return "a string"
	case t == "bool", t == "*bool":
		return "a boolean (true or false)"
	case strings.HasPrefix(t, "float"):
		return "a number"
	case strings.HasPrefix(t, "[]"):
		return "an array"
	case strings.HasPrefix(t, "map["), strings.HasPrefix(t, "struct"), strings.HasPrefix(t, "config."), strings.HasPrefix(t, "*config."):
		return "a table"
	case t == "time.Time":
		return "a date-time (e.g. 2026-01-02T15:04:05Z)"
	}
	return t
}

// parser collects warnings and errors for one document.
type parser struct {
	file     string
	idx      *keyIndex
	warnings []Warning
	errs     []error
	template bool // url, token and executor may be missing
}

func (p *parser) warn(key string, line int, format string, args ...any) {
	if line == 0 && p.idx != nil {
		line = p.idx.line(key)
	}
	p.warnings = append(p.warnings, Warning{File: p.file, Line: line, Key: key, Msg: fmt.Sprintf(format, clipArgs(args)...)})
}

func (p *parser) fail(key, format string, args ...any) {
	line := 0
	if p.idx != nil {
		line = p.idx.line(key)
	}
	p.errs = append(p.errs, &Error{File: p.file, Line: line, Key: key, Msg: fmt.Sprintf(format, clipArgs(args)...)})
}

// maxShown bounds a value echoed in a message: the file and line say
// where it is, and a huge value must not make a huge error.
const maxShown = 120

// clip shortens a long value for a message, saying how long it was.
func clip(s string) string {
	if len(s) <= maxShown {
		return s
	}
	cut := maxShown
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s…(%d bytes)", s[:cut], len(s))
}

func clipArgs(args []any) []any {
	out := make([]any, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case string:
			out[i] = clip(v)
		case []byte:
			out[i] = clip(string(v))
		case error:
			out[i] = clip(v.Error())
		default:
			out[i] = a
		}
	}
	return out
}
