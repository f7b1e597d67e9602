// Command bench measures podrunner (and, with --runner-cmd, any other
// GitLab-Runner-compatible runner side by side) against the test
// coordinator: pickup latency, job overhead with the shell and the
// Kubernetes executors, a 200 MiB trace, the manager's memory and the
// API-server requests per Kubernetes job. See bench/README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
)

const (
	labelPodrunner = "podrunner"
	labelOther     = "other"
)

var allScenarios = []string{"pickup", "shell", "k8s", "managers", "trace", "footprint"}

type options struct {
	only        []string
	quick       bool
	json        bool
	runnerCmd   string
	otherHelper string
	podrunner   string
	helperImage string
	helperVol   bool
	importHelp  string
	kubeconfig  string
	nodeIP      string
	role        string
	keep        bool
}

type bench struct {
	opts        options
	rep         *Report
	tmp         string
	listenLocal string
	runners     []runnerSpec
	kube        *kubeTarget
	failed      bool
}

func main() {
	var o options
	fs := pflag.NewFlagSet("bench", pflag.ContinueOnError)
	fs.StringSliceVar(&o.only, "only", nil, "scenarios to run, comma-separated: "+strings.Join(allScenarios, ","))
	fs.BoolVar(&o.quick, "quick", false, "fewer jobs and a 25 MiB trace (for development; the figures are noisier)")
	fs.BoolVar(&o.json, "json", false, "print the report as JSON instead of a table")
	fs.StringVar(&o.runnerCmd, "runner-cmd", "", "another GitLab-Runner-compatible runner to measure beside podrunner (shell words; it gets `run --config FILE --working-directory DIR`)")
	fs.StringVar(&o.otherHelper, "runner-helper-image", "podrunner.local/podrunner:dev", "helper_image written for --runner-cmd's Kubernetes runner (empty: left out)")
	fs.StringVar(&o.podrunner, "podrunner", "", "podrunner binary to measure (default: built from ./cmd/podrunner)")
	fs.StringVar(&o.helperImage, "helper-image", "podrunner.local/podrunner-helper:dev", "podrunner's helper_image (the agent) for the Kubernetes scenario")
	fs.BoolVar(&o.helperVol, "helper-image-volume", true, "podrunner's helper_image_volume: the agent from the helper image as an image volume (needs Kubernetes 1.35+ and containerd 2.1+, as hack/cluster has); false: the helper container")
	fs.StringVar(&o.importHelp, "import-helper", "no", "yes: rebuild podrunner.local/podrunner{,-helper}:dev from the measured binary and the podrunner-helper next to it with hack/cluster/images (root; the e2e tests share those images)")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig of the cluster (default $KUBECONFIG); none: Kubernetes rows are skipped")
	fs.StringVar(&o.nodeIP, "node-ip", "", "address of this machine pods reach (default $PODRUNNER_NODE_IP, then the node's InternalIP)")
	fs.StringVar(&o.role, "role", "deploy/rbac/role.yaml", "the Role podrunner's ServiceAccount gets")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory (runner logs, configs)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	for _, s := range o.only {
		if !contains(allScenarios, s) {
			fmt.Fprintf(os.Stderr, "bench: unknown scenario %q in --only (known: %s)\n", s, strings.Join(allScenarios, ","))
			os.Exit(2)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b, err := run(ctx, o, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	if b.failed {
		os.Exit(1)
	}
}

func contains(s []string, x string) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}

func run(ctx context.Context, o options, out io.Writer) (*bench, error) {
	start := time.Now()
	tmp, err := os.MkdirTemp("", "podrunner-bench-")
	if err != nil {
		return nil, err
	}
	if o.keep {
		progress("work directory %s", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	b := &bench{opts: o, tmp: tmp, listenLocal: "127.0.0.1:0", rep: &Report{Started: start, Machine: machine()}}
	bin := o.podrunner
	if bin == "" {
		bin = filepath.Join(tmp, "podrunner")
		progress("building podrunner and podrunner-helper")
		// -o DIR builds both, each named after its command.
		c := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", tmp+"/", "./cmd/podrunner", "./cmd/podrunner-helper")
		c.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := c.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("build podrunner (run the bench from the repository root or pass --podrunner): %v\n%s", err, out)
		}
	}
	if bin, err = filepath.Abs(bin); err != nil {
		return nil, err
	}
	b.runners = []runnerSpec{{Label: labelPodrunner, Cmd: shellQuote(bin), HelperImage: o.helperImage, HelperImageVolume: o.helperVol}}
	if o.runnerCmd != "" {
		b.runners = append(b.runners, runnerSpec{Label: labelOther, Cmd: o.runnerCmd, HelperImage: o.otherHelper})
	}
	for _, r := range b.runners {
		b.rep.Runners = append(b.rep.Runners, r.Label)
		b.rep.Commands = append(b.rep.Commands, r.Label+": "+r.Cmd+" run --config <dir>/config.toml --working-directory <dir>/work")
	}

	for _, sc := range allScenarios {
		if len(o.only) > 0 && !contains(o.only, sc) {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		if sc == "k8s" {
			b.kubernetes(ctx, bin, len(o.only) == 0 || contains(o.only, "managers"))
			continue
		}
		if sc == "managers" {
			if contains(o.only, "managers") && !contains(o.only, "k8s") {
				b.kubernetes(ctx, bin, true)
			}
			continue
		}
		for _, r := range b.runners {
			t := time.Now()
			progress("%s: %s", sc, r.Label)
			var err error
			switch sc {
			case "pickup":
				err = b.pickup(ctx, r)
			case "shell":
				err = b.shellOverhead(ctx, r, 1)
				if err == nil {
					err = b.shellOverhead(ctx, r, 10)
				}
			case "trace":
				err = b.trace(ctx, r)
			case "footprint":
				err = b.footprint(ctx, r)
			}
			b.done(sc, r, t, err)
		}
	}
	b.rep.Seconds = time.Since(start).Seconds()
	if o.json {
		return b, b.rep.WriteJSON(out)
	}
	fmt.Fprintf(out, "\npodrunner bench, %s, %.0f s; cells are p50 / p95 (ms) or one value\n", b.rep.Machine, b.rep.Seconds)
	for _, c := range b.rep.Commands {
		fmt.Fprintf(out, "  %s\n", c)
	}
	fmt.Fprintln(out)
	return b, b.rep.WriteTable(out)
}

// kubernetes runs scenarios 3 and 6 (and 7 with managers), or adds
// "skipped: no cluster" rows.
func (b *bench) kubernetes(ctx context.Context, bin string, managers bool) {
	cs, cfg, err := connectCluster(ctx, b.opts.kubeconfig)
	if err != nil {
		for _, r := range b.runners {
			b.rep.Add(r.Label, scKube, "all figures", "", nil, Text("skipped: no cluster ("+err.Error()+")"))
			b.rep.Add(r.Label, scAPI, "all figures", "", nil, Text("skipped: no cluster"))
		}
		progress("kubernetes: skipped: no cluster: %v", err)
		return
	}
	if b.opts.importHelp == "yes" {
		progress("kubernetes: importing the helper image from %s", bin)
		if err := importHelper(bin); err != nil {
			b.fail("k8s", err)
			return
		}
	} else {
		b.note("helper image %s used as found in the cluster (not rebuilt from the measured binary)", b.opts.helperImage)
	}
	if b.opts.helperVol {
		b.note("podrunner: helper_image_volume = true (the agent from an image volume, one container per job pod)")
	} else {
		b.note("podrunner: helper_image_volume = false (the helper container copies the agent)")
	}
	k, err := setupCluster(ctx, cs, cfg, b.opts.nodeIP, b.tmp, b.opts.role)
	if err != nil {
		b.fail("k8s", err)
		return
	}
	defer k.Close()
	b.kube = k
	if b.opts.only == nil || contains(b.opts.only, "k8s") {
		b.kubeOverhead(ctx)
	}
	if managers {
		for _, r := range b.runners {
			t := time.Now()
			progress("k8s managers: %s", r.Label)
			b.done("k8s managers", r, t, b.kubeManagers(ctx, r))
		}
	}
}

// kubeOverhead runs scenario 3 (and its API rows, 6): the bare-pod floor,
// then every runner.
func (b *bench) kubeOverhead(ctx context.Context) {
	k := b.kube
	t := time.Now()
	progress("kubernetes: bare pods (floor) in namespace %s", k.ns)
	bare, err := b.bare(ctx)
	b.done("k8s floor", runnerSpec{Label: "bare pods"}, t, err)
	if err != nil {
		return
	}
	for _, r := range b.runners {
		t := time.Now()
		progress("k8s: %s", r.Label)
		b.done("k8s", r, t, b.kubeJobs(ctx, r, bare))
	}
}

func (b *bench) done(sc string, r runnerSpec, t time.Time, err error) {
	if err != nil {
		b.fail(sc+" "+r.Label, err)
		return
	}
	progress("%s: %s done in %.0f s", sc, r.Label, time.Since(t).Seconds())
}

func (b *bench) fail(what string, err error) {
	b.failed = true
	progress("%s FAILED: %v", what, err)
	msg := err.Error()
	if i := strings.IndexByte(msg, '\n'); i > 0 {
		msg = msg[:i]
	}
	b.note("%s failed: %s", what, msg)
}

func (b *bench) note(format string, args ...any) {
	n := fmt.Sprintf(format, args...)
	if !contains(b.rep.Notes, n) {
		b.rep.Notes = append(b.rep.Notes, n)
	}
}

// n is a sample count, smaller with --quick.
func (b *bench) n(def int) int {
	if b.opts.quick {
		return max(def/5, 5)
	}
	return def
}

func (b *bench) tmpDir(name string) string { return filepath.Join(b.tmp, name) }

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s bench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// machine describes where the figures come from.
func machine() string {
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if l, _, ok := strings.Cut(string(b), "\n"); ok {
			f := strings.Fields(l)
			if len(f) >= 2 {
				var kb int64
				fmt.Sscan(f[1], &kb)
				mem = fmt.Sprintf(", %.1f GiB RAM", float64(kb)/(1<<20))
			}
		}
	}
	return fmt.Sprintf("%d CPUs%s, Linux %s, %s", runtime.NumCPU(), mem, strings.TrimSpace(string(kernel)), runtime.Version())
}
