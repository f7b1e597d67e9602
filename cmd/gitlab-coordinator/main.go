// Command gitlab-coordinator runs podrunner's GitLab-compatible test
// coordinator standalone: point a runner (podrunner or GitLab Runner) at
// the printed URL, register it with the printed token, and a pipeline of
// the project's .gitlab-ci.yml is queued.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/podrunner/podrunner/internal/coordinator"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "gitlab-coordinator:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("gitlab-coordinator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on (host:port)")
	external := fs.String("external-url", "", "URL advertised to runners and jobs (default: the listen URL)")
	regToken := fs.String("registration-token", "", "legacy registration token (random when empty)")
	repo := fs.String("repo", "", "git repository to serve as the project and run a pipeline of")
	project := fs.String("project", "group/project", "project path (namespace/name)")
	ref := fs.String("ref", "", "branch or tag to run (default: the repository's HEAD branch)")
	tags := fs.String("runner-tags", "", "comma separated tags of the pre-created runner")
	ignoreTags := fs.Bool("ignore-tags", false, "let any runner take any job")
	longPoll := fs.Duration("long-poll", 50*time.Second, "jobs/request long polling duration (0 disables)")
	traceInterval := fs.Duration("trace-update-interval", 3*time.Second, "X-GitLab-Trace-Update-Interval sent to runners")
	dataDir := fs.String("data-dir", "", "directory for repositories and uploaded artifacts (a temporary one when empty)")
	maxArtifacts := fs.Int64("max-artifacts-size", coordinator.DefaultMaxArtifactsSize, "maximum size of one uploaded artifact in bytes (413 above)")
	jobs := fs.String("jobs", "", "comma separated jobs to run (and what they need); named manual jobs run")
	verbose := fs.Bool("v", false, "log every request (tokens are never logged)")
	useTLS := fs.Bool("tls", false, "serve HTTPS with a certificate from a private CA generated at start")
	tlsNames := fs.String("tls-names", "", "comma separated extra DNS names or IPs for the HTTPS certificate")
	caOut := fs.String("tls-ca-out", "", "write the private CA certificate (PEM) here, for tls-ca-file or certs/<host>.crt")
	if err := fs.Parse(args); err != nil {
		return err
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	lp := *longPoll
	if lp == 0 {
		lp = -1
	}
	srv, err := coordinator.New(coordinator.Options{
		ListenAddr: *listen, ExternalURL: *external, RegistrationToken: *regToken,
		LongPollTimeout: lp, TraceUpdateInterval: *traceInterval, IgnoreTags: *ignoreTags, Logger: log,
		DataDir: *dataDir, MaxArtifactsSize: *maxArtifacts, TLS: *useTLS, TLSNames: splitList(*tlsNames),
	})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := srv.Start(ctx); err != nil {
		return errors.Join(err, srv.Close())
	}
	defer srv.Close()
	if *caOut != "" {
		if !*useTLS {
			return errors.New("-tls-ca-out needs -tls")
		}
		if err := os.WriteFile(*caOut, srv.CACertPEM(), 0o644); err != nil {
			return fmt.Errorf("write the CA certificate: %w", err)
		}
	}

	runnerTags := splitList(*tags)
	_, runnerToken := srv.CreateRunner(coordinator.RunnerOptions{Description: "gitlab-coordinator", Tags: runnerTags, RunUntagged: true})

	fmt.Fprintf(stdout, "URL:                %s\n", srv.URL())
	if *caOut != "" {
		fmt.Fprintf(stdout, "CA certificate:     %s\n", *caOut)
	}
	fmt.Fprintf(stdout, "registration token: %s\n", srv.RegistrationToken())
	fmt.Fprintf(stdout, "runner token:       %s\n", runnerToken)

	if *repo != "" {
		if _, err := srv.AddProject(*project, *repo); err != nil {
			return err
		}
		pl, err := srv.CreatePipelineWith(*project, coordinator.PipelineOptions{Ref: *ref, Jobs: splitList(*jobs)})
		if err != nil {
			return err
		}
		for _, w := range pl.Warnings {
			fmt.Fprintln(stderr, "warning:", w)
		}
		fmt.Fprintf(stdout, "pipeline %d queued (%d jobs) at %s\n", pl.ID, len(pl.Jobs), pl.Sha)
		v, err := srv.WaitPipeline(ctx, pl.ID)
		for _, j := range v.Jobs {
			note := string(j.FailureReason)
			if j.Retried {
				note += " (retried)"
			} else if j.Status == coordinator.StatusFailed && j.AllowFailure {
				note += " (allowed to fail)"
			}
			fmt.Fprintf(stdout, "job %d %-20s %-9s %s\n", j.ID, j.Name, j.Status, strings.TrimSpace(note))
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "pipeline %d %s\n", v.ID, v.Status)
		if v.Status != coordinator.StatusSuccess {
			return fmt.Errorf("pipeline %s", v.Status)
		}
		return nil
	}
	<-ctx.Done()
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, t := range strings.Split(s, ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}
