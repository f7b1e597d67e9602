package agentcmd

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/podrunner/podrunner/internal/agent"
	"github.com/podrunner/podrunner/internal/job"
)

func runAgentCmd(t *testing.T, ctx context.Context, args ...string) (string, error) {
	t.Helper()
	cmd := Command()
	var out bytes.Buffer
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	err := cmd.ExecuteContext(ctx)
	return out.String(), err
}

func TestAgentInstallCopiesTheExecutable(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "podrunner-bin")
	// A stale binary from an earlier attempt is replaced.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, filepath.Base(agent.Binary)), []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := runAgentCmd(t, context.Background(), "install", dir); err != nil {
		t.Fatalf("install: %v\n%s", err, out)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, filepath.Base(agent.Binary))
	got, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("installed %d bytes, the executable has %d", len(got), len(want))
	}
	fi, err := os.Stat(dst)
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("mode %v %v, want 0755", fi.Mode(), err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
	if _, err := runAgentCmd(t, context.Background(), "install"); err == nil {
		t.Error("install without DIR must fail")
	}
}

func TestAgentRunBadSpec(t *testing.T) {
	f := filepath.Join(t.TempDir(), "job.json")
	if err := os.WriteFile(f, []byte(`{"token":"t","plan":{"stages":[]}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := runAgentCmd(t, context.Background(), "run", "--spec", f, "--state-dir", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), f) || !strings.Contains(err.Error(), `"plan.stages"`) {
		t.Errorf("got %v, want an error naming %s and plan.stages", err, f)
	}
}

// agent run with a real spec: it serves the log until acked and exits 0.
func TestAgentRunServesUntilAck(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // the agent listens itself, from the spec
	spec := agent.Spec{Token: "tok", Listen: addr, Plan: &job.Plan{
		ProjectDir: filepath.Join(dir, "project"), Timeout: time.Minute, Shell: "sh",
		Stages: []job.Stage{{Name: "step_script", Kind: job.KindUser, When: job.WhenOnSuccess, Script: "echo hello from the agent\n"}},
	}}
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(dir, "job.json")
	if err := os.WriteFile(f, b, 0o600); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		_, err := runAgentCmd(t, ctx, "run", "--spec", f, "--state-dir", filepath.Join(dir, "state"), "--linger", "1m")
		errc <- err
	}()
	c := agent.NewClient("http://"+addr, "tok", nil)
	var log []byte
	deadline := time.Now().Add(30 * time.Second)
	for {
		data, size, state, err := c.Log(ctx, int64(len(log)))
		if err != nil && time.Now().After(deadline) {
			t.Fatalf("log: %v", err)
		}
		log = append(log, data...)
		if err == nil && state == agent.StateDone && int64(len(log)) == size {
			break
		}
		if err != nil {
			time.Sleep(20 * time.Millisecond) // not listening yet
		}
	}
	if !strings.Contains(string(log), "hello from the agent") || !strings.Contains(string(log), "Job resources:") {
		t.Errorf("log:\n%s", log)
	}
	if err := c.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("agent run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("agent run did not exit after ack")
	}
}

// A spec written by a manager of another build is refused with the fix.
func TestAgentRunRefusesOtherBuild(t *testing.T) {
	f := filepath.Join(t.TempDir(), "job.json")
	spec := `{"token":"t","version":"0.0.1 (abc)","plan":{"shell":"sh","stages":[{"name":"step_script","kind":"user","when":"on_success","script":"true"}]}}`
	if err := os.WriteFile(f, []byte(spec), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := runAgentCmd(t, context.Background(), "run", "--spec", f, "--state-dir", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "0.0.1 (abc)") || !strings.Contains(err.Error(), "helper_image") {
		t.Errorf("got %v, want a version mismatch naming the manager's build and helper_image", err)
	}
}
