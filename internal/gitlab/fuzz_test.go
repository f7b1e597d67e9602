package gitlab

import (
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParseRangeEnd: any 416 Range header yields a non-negative offset, and
// a well-formed "0-<n>" yields n.
func FuzzParseRangeEnd(f *testing.F) {
	for _, s := range []string{"0-64", "", "0-", "-", "bytes=0-7", "0--1", "0-99999999999999999999", " 3-4 "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n := parseRangeEnd(s)
		if n < 0 {
			t.Fatalf("parseRangeEnd(%q) = %d", s, n)
		}
		if v, err := strconv.ParseInt(s, 10, 64); err == nil && v >= 0 {
			if got := parseRangeEnd("0-" + s); got != v {
				t.Fatalf("parseRangeEnd(0-%s) = %d", s, got)
			}
		}
	})
}

// FuzzErrorMessage: any error body decodes without panic into one bounded
// log-safe line.
func FuzzErrorMessage(f *testing.F) {
	for _, s := range []string{
		`{"message":"403 Forbidden"}`,
		`{"message":{"runner_projects.base":["Maximum number exceeded"]}}`,
		`{"message":["a",{"b":[1]}]}`,
		`{"error":"x"}`,
		`<html>`,
		`{"message":{"a":null}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		msg := errorMessage(body)
		if strings.ContainsAny(msg, "\n\r") {
			t.Fatalf("message %q spans lines", msg)
		}
		if utf8.RuneCountInString(msg) > 1025 {
			t.Fatalf("message of %d runes not truncated", utf8.RuneCountInString(msg))
		}
		if utf8.ValidString(string(body)) && !utf8.ValidString(msg) {
			t.Fatalf("valid UTF-8 body gave invalid message %q", msg)
		}
		if len(msg) > 1024+len("…") {
			t.Fatalf("message of %d bytes not truncated", len(msg))
		}
		if msg != strings.TrimSpace(msg) {
			t.Fatalf("message %q not trimmed", msg)
		}
	})
}
