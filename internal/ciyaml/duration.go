package ciyaml

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// unitSeconds are the words GitLab's duration parser (Ruby ChronicDuration)
// understands, with a month of 30 days and a year of 365 days.
var unitSeconds = map[string]float64{
	"s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
	"m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
	"h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
	"d": 86400, "day": 86400, "days": 86400,
	"w": 604800, "wk": 604800, "wks": 604800, "week": 604800, "weeks": 604800,
	"mo": 2592000, "mon": 2592000, "mos": 2592000, "mons": 2592000, "month": 2592000, "months": 2592000,
	"y": 31536000, "yr": 31536000, "yrs": 31536000, "year": 31536000, "years": 31536000,
}

// ParseDuration reads a GitLab duration string such as "1h 30m",
// "10 minutes", "2 hours and 5 minutes", "1.5h", "01:30:00" or a bare
// number of seconds ("3600").
func ParseDuration(s string) (time.Duration, error) {
	in := strings.ToLower(strings.TrimSpace(s))
	if in == "" {
		return 0, fmt.Errorf("empty duration")
	}
	if strings.Contains(in, ":") && !strings.ContainsFunc(in, unicode.IsLetter) {
		return parseClock(in)
	}
	toks := tokenize(in)
	var total float64
	seen := false
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		if t == "and" {
			continue
		}
		num, err := strconv.ParseFloat(t, 64)
		if err != nil || math.IsNaN(num) || math.IsInf(num, 0) || num < 0 {
			return 0, fmt.Errorf("%q is not a duration", s)
		}
		mult := 1.0 // a bare number counts seconds
		if i+1 < len(toks) {
			if u, ok := unitSeconds[toks[i+1]]; ok {
				mult = u
				i++
			} else if _, err := strconv.ParseFloat(toks[i+1], 64); err != nil && toks[i+1] != "and" {
				return 0, fmt.Errorf("%q is not a duration: unknown unit %q", s, toks[i+1])
			}
		}
		total += num * mult
		seen = true
	}
	if !seen {
		return 0, fmt.Errorf("%q is not a duration", s)
	}
	if total > float64(math.MaxInt64/int64(time.Second)) {
		return 0, fmt.Errorf("%q is too long", s)
	}
	return time.Duration(total * float64(time.Second)).Round(time.Second), nil
}

// tokenize splits "1h30m" / "1 h, 30 min" into numbers and words.
func tokenize(s string) []string {
	var toks []string
	var cur strings.Builder
	kind := 0 // 1 number, 2 word
	flush := func() {
		if cur.Len() > 0 {
			toks = append(toks, cur.String())
			cur.Reset()
		}
		kind = 0
	}
	for _, r := range s {
		switch {
		case unicode.IsDigit(r) || r == '.':
			if kind == 2 {
				flush()
			}
			kind = 1
			cur.WriteRune(r)
		case unicode.IsLetter(r):
			if kind == 1 {
				flush()
			}
			kind = 2
			cur.WriteRune(r)
		case unicode.IsSpace(r) || r == ',':
			flush()
		default: // anything else makes the string invalid
			flush()
			toks = append(toks, string(r))
		}
	}
	flush()
	return toks
}

func parseClock(s string) (time.Duration, error) {
	parts := strings.Split(s, ":")
	if len(parts) > 3 {
		return 0, fmt.Errorf("%q is not a duration", s)
	}
	var total int64
	for _, p := range parts {
		n, err := strconv.ParseInt(strings.TrimSpace(p), 10, 32)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("%q is not a duration", s)
		}
		total = total*60 + n
	}
	if total > math.MaxInt64/int64(time.Second) {
		return 0, fmt.Errorf("%q is too long", s)
	}
	return time.Duration(total) * time.Second, nil
}
