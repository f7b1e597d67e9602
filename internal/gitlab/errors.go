package gitlab

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// StatusError is an unexpected HTTP status from GitLab. It unwraps to
// ErrForbidden (403), ErrNotFound (404) or ErrTooLarge (413).
type StatusError struct {
	Method     string
	URL        string // never holds a token
	StatusCode int
	Status     string // e.g. "403 Forbidden"
	Message    string // decoded {"message": ...}, may be empty
	RequestID  string
}

func (e *StatusError) Error() string {
	status := e.Status
	if status == "" {
		status = fmt.Sprintf("%d %s", e.StatusCode, http.StatusText(e.StatusCode))
	}
	if e.Message == "" {
		return fmt.Sprintf("%s %s: %s", e.Method, e.URL, status)
	}
	return fmt.Sprintf("%s %s: %s (%s)", e.Method, e.URL, status, e.Message)
}

// Unwrap maps well-known statuses to the package's sentinel errors.
func (e *StatusError) Unwrap() error {
	switch e.StatusCode {
	case http.StatusForbidden:
		return ErrForbidden
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusRequestEntityTooLarge:
		return ErrTooLarge
	}
	return nil
}

// errorMessage decodes GitLab's error body {"message": string | {field:
// [strings]}} (also {"error": string}) into one line; "" when the body is
// not such JSON.
func errorMessage(body []byte) string {
	var env struct {
		Message json.RawMessage `json:"message"`
		Error   json.RawMessage `json:"error"`
	}
	if json.Unmarshal(body, &env) != nil {
		return ""
	}
	if msg := messageText(env.Message); msg != "" {
		return msg
	}
	return messageText(env.Error)
}

func messageText(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return oneLine(s)
	}
	var list []any
	if json.Unmarshal(raw, &list) == nil {
		return oneLine(joinValues(list))
	}
	var fields map[string]any
	if json.Unmarshal(raw, &fields) == nil {
		keys := make([]string, 0, len(fields))
		for k := range fields {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, 0, len(keys))
		for _, k := range keys {
			parts = append(parts, k+": "+joinValues(fields[k]))
		}
		return oneLine(strings.Join(parts, ", "))
	}
	return ""
}

func joinValues(v any) string {
	switch t := v.(type) {
	case []any:
		parts := make([]string, 0, len(t))
		for _, e := range t {
			parts = append(parts, joinValues(e))
		}
		return strings.Join(parts, "; ")
	case string:
		return t
	case nil:
		return ""
	default:
		b, _ := json.Marshal(t)
		return string(b)
	}
}

// oneLine keeps a server message from breaking log lines.
func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == '\t' {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	const maxLen = 1024
	if len(s) > maxLen {
		cut := maxLen
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

// parseRangeEnd reads the offset GitLab holds from a 416's Range header
// ("0-<n>", n = the bytes it has): n, or 0 when missing or malformed.
func parseRangeEnd(v string) int64 {
	v = strings.TrimSpace(v)
	v = strings.TrimPrefix(v, "bytes=")
	v = strings.TrimPrefix(v, "bytes ")
	_, end, ok := strings.Cut(v, "-")
	if !ok {
		return 0
	}
	n, err := strconv.ParseInt(strings.TrimSpace(end), 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// maxUpdateInterval caps X-GitLab-Trace-Update-Interval.
const maxUpdateInterval = 15 * time.Minute

// parseUpdateInterval reads X-GitLab-Trace-Update-Interval (seconds):
// capped at 15 min, 0 when absent, malformed or ≤ 0.
func parseUpdateInterval(v string) time.Duration {
	if v == "" {
		return 0
	}
	s, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || s <= 0 {
		return 0
	}
	if s >= int64(maxUpdateInterval/time.Second) {
		return maxUpdateInterval
	}
	return time.Duration(s) * time.Second
}

// jobStatus is the normalised Job-Status header.
func jobStatus(h http.Header) string {
	return strings.ToLower(strings.TrimSpace(h.Get(headerJobStatus)))
}

func abortStatus(s string) bool { return s == "canceled" || s == "failed" }
