package config

import "strings"

const shortTokenLen = 9

// ShortToken is the short form of a token used in names and logs (never the
// full token): known prefixes are stripped (glrt-, glrt-t1_ .. glrt-t3_,
// t1_ .. t3_, glrtr-, glcbt-, GR + 7 hex digits) and the first 9 characters
// kept, as GitLab Runner does.
func ShortToken(token string) string {
	s := token
	switch {
	case strings.HasPrefix(s, "glrt-"):
		s = s[len("glrt-"):]
		s = stripPartition(s)
	case strings.HasPrefix(s, "glrtr-"):
		s = s[len("glrtr-"):]
	default:
		s = stripPartition(s)
	}
	s = strings.TrimPrefix(s, "glcbt-")
	if len(s) >= 9 && s[:2] == "GR" && isHex(s[2:9]) {
		s = s[9:]
	}
	if len(s) > shortTokenLen {
		s = s[:shortTokenLen]
	}
	return s
}

func stripPartition(s string) string {
	if len(s) >= 3 && s[0] == 't' && s[1] >= '1' && s[1] <= '3' && s[2] == '_' {
		return s[3:]
	}
	return s
}

func isHex(s string) bool {
	for _, c := range []byte(s) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// IsAuthenticationToken reports whether token is a runner authentication
// token (glrt-) as created in GitLab's UI, as opposed to a legacy
// registration token.
func IsAuthenticationToken(token string) bool { return strings.HasPrefix(token, "glrt-") }
