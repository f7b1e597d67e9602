//go:build unix

package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/podrunner/podrunner/internal/agent"
	"github.com/podrunner/podrunner/internal/job"
)

// startAwaiting runs Await on a loopback port until ctx ends and returns
// its URL, the fingerprint it printed and where its result arrives.
func startAwaiting(t *testing.T, ctx context.Context, termGrace, stopLinger time.Duration) (url string, fp []byte, done <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	res := make(chan error, 1)
	go func() {
		res <- Await(ctx, AwaitOptions{TokenSHA256: agent.TokenSHA256(testAPIToken), Out: pw, Listener: ln},
			Options{StateDir: t.TempDir(), Linger: time.Minute, TermGrace: termGrace, StopLinger: stopLinger})
	}()
	fp, err = agent.ReadFingerprint(pr)
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, pr) //nolint:errcheck // drain the rest of the output
	return "https://" + ln.Addr().String(), fp, res
}

// pinnedTestClient is the runner's client of the agent at url, its
// certificate pinned.
func pinnedTestClient(url string, fp []byte) *agent.Client {
	return agent.NewClient(url, testAPIToken, &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: agent.PinnedTLS(fp)}})
}

// holdAwaiting starts an awaiting agent and hands it spec on hold.
func holdAwaiting(ctx context.Context, t *testing.T, spec *agent.Spec) (c *agent.Client, body []byte, done <-chan error) {
	t.Helper()
	url, fp, done := startAwaiting(t, ctx, time.Second, time.Millisecond)
	body, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	c = pinnedTestClient(url, fp)
	if err := c.HoldSpec(ctx, body); err != nil {
		t.Fatal(err)
	}
	return c, body, done
}

// readToEnd reads the job log on from len(log) until the job is done.
func readToEnd(ctx context.Context, t *testing.T, c *agent.Client, log []byte) []byte {
	t.Helper()
	for {
		data, size, state, err := c.Log(ctx, int64(len(log)))
		if err != nil {
			t.Fatal(err)
		}
		log = append(log, data...)
		if state == agent.StateDone && int64(len(log)) >= size {
			return log
		}
	}
}

// An awaiting agent: only the holder of the token whose hash it was
// given can hand it a spec, only over TLS with the certificate it
// printed; then it runs the job like Run and serves it on the same port.
func TestAwaitReceivesSpecOverPinnedTLS(t *testing.T) {
	spec := testJob{steps: []job.Step{script("echo awaited job ran")}, strategy: job.GitNone}.spec(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	url, fp, done := startAwaiting(t, ctx, 2*time.Second, time.Millisecond)
	body, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	pinned := &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: agent.PinnedTLS(fp)}}

	// Another certificate (a stand-in for the agent) is refused by the client.
	other := make([]byte, len(fp))
	copy(other, fp)
	other[0] ^= 0xff
	wrongPin := &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: agent.PinnedTLS(other)}}
	if err := agent.NewClient(url, testAPIToken, wrongPin).PutSpec(ctx, body); err == nil || !strings.Contains(err.Error(), "is not the one the agent printed") {
		t.Fatalf("PutSpec to an unpinned certificate: %v", err)
	}
	// Before the spec, the API answers nothing but POST /v1/spec.
	if _, err := agent.NewClient(url, testAPIToken, pinned).Status(ctx); err == nil {
		t.Fatal("status before the spec: no error")
	}
	if err := agent.NewClient(url, "wrong-token", pinned).PutSpec(ctx, body); !errors.Is(err, agent.ErrUnauthorized) {
		t.Fatalf("PutSpec with a wrong token: %v, want ErrUnauthorized", err)
	}
	var refused *agent.SpecRefusedError
	if err := agent.NewClient(url, testAPIToken, pinned).PutSpec(ctx, []byte(`{"token":"`+testAPIToken+`"}`)); !errors.As(err, &refused) || !strings.Contains(refused.Msg, "plan") {
		t.Fatalf("PutSpec of an invalid spec: %v, want a refusal naming the plan", err)
	}

	c := agent.NewClient(url, testAPIToken, pinned)
	if err := c.PutSpec(ctx, body); err != nil {
		t.Fatal(err)
	}
	if err := c.PutSpec(ctx, body); err != nil { // a re-send (adoption) is harmless
		t.Fatalf("second PutSpec: %v", err)
	}
	var log []byte
	deadline := time.Now().Add(30 * time.Second)
	for {
		data, size, state, err := c.Log(ctx, int64(len(log)))
		if err != nil {
			t.Fatalf("log: %v", err)
		}
		log = append(log, data...)
		if state == agent.StateDone && int64(len(log)) == size {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("job not done; log so far:\n%s", log)
		}
	}
	if !strings.Contains(string(log), "awaited job ran") {
		t.Errorf("log:\n%s", log)
	}
	if err := c.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Await: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Await did not return after the ack")
	}
}

func TestAwaitBadTokenHash(t *testing.T) {
	err := Await(context.Background(), AwaitOptions{TokenSHA256: "abc"}, Options{})
	if !errors.Is(err, ErrAgent) || !strings.Contains(err.Error(), "token-sha256") {
		t.Errorf("got %v", err)
	}
}

func TestReadFingerprint(t *testing.T) {
	for _, tc := range []struct {
		name, in, err string
	}{
		{"first line", agent.FingerprintPrefix + strings.Repeat("ab", 32) + "\nmore\n", ""},
		{"after log lines, with a timestamp", "time=x msg=starting\n2026-12-04T00:00:00Z " + agent.FingerprintPrefix + strings.Repeat("0f", 32) + "\n", ""},
		{"short", agent.FingerprintPrefix + "abcd\n", "malformed"},
		{"missing", "time=x level=ERROR msg=boom\n", "without its TLS fingerprint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fp, err := agent.ReadFingerprint(strings.NewReader(tc.in))
			if tc.err == "" {
				if err != nil || len(fp) != 32 {
					t.Fatalf("got %x, %v", fp, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("got %v, want %q", err, tc.err)
			}
		})
	}
}

// An awaiting agent stopped by SIGTERM (its context) while the runner
// long-polls the log still answers that poll with the end of the log:
// the runner learns the job ended before the agent is gone.
func TestAwaitAnswersThePollInFlightWhenStopped(t *testing.T) {
	spec := testJob{steps: []job.Step{script("echo before-sleep", "sleep 30")}, strategy: job.GitNone}.spec(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	url, fp, done := startAwaiting(t, ctx, time.Second, DefaultStopLinger)
	body, _ := json.Marshal(spec)
	c := pinnedTestClient(url, fp)
	if err := c.PutSpec(ctx, body); err != nil {
		t.Fatal(err)
	}
	var log []byte
	for !strings.Contains(string(log), "before-sleep") {
		data, _, _, err := c.Log(context.Background(), int64(len(log)))
		if err != nil {
			t.Fatal(err)
		}
		log = append(log, data...)
	}
	// A long poll in flight, then the SIGTERM.
	type answer struct {
		state string
		err   error
	}
	got := make(chan answer, 1)
	go func() {
		off := int64(len(log))
		for {
			data, size, state, err := c.Log(context.Background(), off)
			off += int64(len(data))
			if err != nil || (state == agent.StateDone && off >= size) {
				got <- answer{state, err}
				return
			}
		}
	}()
	time.Sleep(200 * time.Millisecond)
	cancel()
	select {
	case a := <-got:
		if a.err != nil || a.state != agent.StateDone {
			t.Fatalf("poll in flight: state %q, err %v; want the log's end", a.state, a.err)
		}
		// The result says the agent was stopped, not what the job did.
		if st, err := c.Status(context.Background()); err != nil || st.Result == nil || !st.Result.Stopped || st.Result.Success {
			t.Fatalf("status after the stop: %+v %v, want a result marked stopped", st, err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the poll in flight got no answer")
	}
	<-done
}

// A spec sent on hold: the agent fetches the sources at once but runs no
// script before the runner says start; Start, or the
// spec sent again without hold (an adopting runner), lets it run.
func TestAwaitHoldsScriptsUntilStart(t *testing.T) {
	for _, release := range []string{"start", "spec again"} {
		t.Run(release, func(t *testing.T) {
			r := newGitRepo(t, 1)
			r.pipelineRef(7, r.commits[0])
			spec := testJob{steps: []job.Step{script("echo script-ran")}, repo: r, sha: r.commits[0], pipeline: 7}.spec(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			c, body, done := holdAwaiting(ctx, t, spec)
			var log []byte
			for !strings.Contains(string(log), "Checking out") {
				data, _, _, err := c.Log(ctx, int64(len(log)))
				if err != nil {
					t.Fatal(err)
				}
				log = append(log, data...)
			}
			time.Sleep(300 * time.Millisecond)
			st, err := c.Status(ctx)
			if err != nil || st.State != agent.StateRunning || strings.Contains(string(log), "script-ran") {
				t.Fatalf("held job: status %+v %v, log:\n%s", st, err, log)
			}
			if r.hits.Load() == 0 {
				t.Fatal("the held job did not fetch its sources")
			}
			if release == "start" {
				err = c.Start(ctx)
			} else {
				err = c.PutSpec(ctx, body)
			}
			if err != nil {
				t.Fatal(err)
			}
			log = readToEnd(ctx, t, c, log)
			if !strings.Contains(string(log), "script-ran") {
				t.Fatalf("started job did not run its script:\n%s", log)
			}
			_ = c.Ack(ctx)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A held job with a pre_get_sources_script hook runs nothing at all
// (the hook is job code) until start, and an abort ends it unrun.
func TestAwaitHeldHookWaitsAndAbortEnds(t *testing.T) {
	spec := testJob{steps: []job.Step{script("echo script-ran")}, strategy: job.GitNone}.spec(t)
	spec.Plan.Stages[0].PreScript = "echo hook-ran"
	spec.Plan.Stages[0].Script = "echo stage-ran"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, _, done := holdAwaiting(ctx, t, spec)
	time.Sleep(300 * time.Millisecond)
	if err := c.Abort(ctx); err != nil {
		t.Fatal(err)
	}
	log := readToEnd(ctx, t, c, nil)
	if strings.Contains(string(log), "-ran") {
		t.Fatalf("an aborted held job ran code:\n%s", log)
	}
	_ = c.Ack(ctx)
	<-done
}
