package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
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

func TestUnknownJob(t *testing.T) {
	dir := t.TempDir()
	git := func(args ...string) {
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=A", "GIT_AUTHOR_EMAIL=a@x", "GIT_COMMITTER_NAME=A", "GIT_COMMITTER_EMAIL=a@x", "GIT_CONFIG_GLOBAL=/dev/null")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v %s", args, err, out)
		}
	}
	git("init", "-q", "-b", "main")
	if err := os.WriteFile(filepath.Join(dir, ".gitlab-ci.yml"), []byte("build: {script: [echo]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	git("add", ".")
	git("commit", "-q", "-m", "ci")
	var out, errb bytes.Buffer
	err := run([]string{"-repo", dir, "-jobs", "nope", "-data-dir", t.TempDir()}, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("-jobs nope: %v", err)
	}
}
