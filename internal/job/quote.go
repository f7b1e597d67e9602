package job

import (
	"fmt"
	"strings"
)

// ShellQuote quotes s for any POSIX shell: the result is one word whose
// value is exactly s (quotes, newlines, $, backticks, any byte but NUL).
// NUL cannot be represented in a shell word and is an error.
func ShellQuote(s string) (string, error) {
	if strings.IndexByte(s, 0) >= 0 {
		return "", fmt.Errorf("value contains a NUL byte, which cannot be passed to a shell")
	}
	return quote(s), nil
}

// quote is ShellQuote for values already known to be NUL-free.
func quote(s string) string {
	if s == "" {
		return "''"
	}
	if isSafeWord(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func isSafeWord(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("_-./:,+@%=", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// ValidName reports whether key can be a shell variable name.
func ValidName(key string) bool {
	if key == "" {
		return false
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case c == '_', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
