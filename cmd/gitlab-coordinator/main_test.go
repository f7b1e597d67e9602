package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestBadFlags(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run([]string{"-nope"}, &out, &errb); err == nil {
		t.Fatal("unknown flag accepted")
	}
	if err := run([]string{"-listen", "256.0.0.1:x"}, &out, &errb); err == nil || !strings.Contains(err.Error(), "listen") {
		t.Fatalf("bad listen address: %v", err)
	}
	if err := run([]string{"-external-url", "ftp://x"}, &out, &errb); err == nil {
		t.Fatal("bad external URL accepted")
	}
}
