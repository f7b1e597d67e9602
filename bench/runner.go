package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// runnerSpec is a runner under test: a label for the table and the
// command that starts it. The command gets, appended, exactly
//
//	run --config <dir>/config.toml --working-directory <dir>/work
//
// through `sh -c 'exec CMD "$@"'`, so the process measured is CMD's own.
type runnerSpec struct {
	Label string
	Cmd   string
	// HelperImage is helper_image of [runners.kubernetes]; empty leaves
	// the key out.
	HelperImage string
	// HelperImageVolume writes helper_image_volume = true (podrunner's
	// own key: the agent from an image volume, no helper container).
	HelperImageVolume bool
}

// runnerProc is a running runner process.
type runnerProc struct {
	spec runnerSpec
	cmd  *exec.Cmd
	dir  string
	log  string
	done chan struct{}
	err  error
}

// startRunner writes config.toml into dir and starts the runner.
func startRunner(spec runnerSpec, dir, configTOML string) (*runnerProc, error) {
	work := filepath.Join(dir, "work")
	if err := os.MkdirAll(work, 0o755); err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(configTOML), 0o600); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "runner.log")
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	c := exec.Command("/bin/sh", "-c", "exec "+spec.Cmd+` "$@"`, "bench-runner",
		"run", "--config", cfg, "--working-directory", work)
	c.Dir = dir
	c.Stdout, c.Stderr = lf, lf
	// Its own process group: the jobs' processes go with it at the end.
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.Start(); err != nil {
		return nil, fmt.Errorf("start runner %q: %w", spec.Cmd, err)
	}
	p := &runnerProc{spec: spec, cmd: c, dir: dir, log: logPath, done: make(chan struct{})}
	go func() { p.err = c.Wait(); close(p.done) }()
	return p, nil
}

// Pid is the runner process (sh exec'd into CMD).
func (p *runnerProc) Pid() int { return p.cmd.Process.Pid }

// exited reports an early exit with the end of the runner's log.
func (p *runnerProc) exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("runner %s exited: %v; end of its log (%s):\n%s", p.spec.Label, p.err, p.log, p.logTail(3000))
	default:
		return nil
	}
}

func (p *runnerProc) logTail(n int) string {
	b, _ := os.ReadFile(p.log)
	return tail(b, n)
}

// Stop ends the runner: SIGTERM, then SIGKILL to its process group after
// 15 s.
func (p *runnerProc) Stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// memKiB reads VmRSS (resident now) and VmHWM (peak resident) of a
// process from /proc/<pid>/status, in KiB.
func memKiB(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("read memory of runner pid %d: %w", pid, err)
	}
	return parseStatus(b)
}

// parseStatus extracts VmRSS and VmHWM ("VmRSS:\t  12345 kB") from a
// /proc/<pid>/status text.
func parseStatus(b []byte) (rss, hwm int64, err error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	found := 0
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, 0, fmt.Errorf("/proc status line %q: want \"<n> kB\"", sc.Text())
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc status line %q: %w", sc.Text(), err)
		}
		if k == "VmRSS" {
			rss = n
		} else {
			hwm = n
		}
		found++
	}
	if found != 2 {
		return 0, 0, fmt.Errorf("/proc status without VmRSS and VmHWM")
	}
	return rss, hwm, nil
}

// shellConfig is a GitLab Runner config.toml for one shell runner.
// extra lines go into the global section (lines without indentation) or
// the [[runners]] table (indented lines).
func shellConfig(w *world, concurrent int, runnerDir, extra string) string {
	var global, local strings.Builder
	for _, l := range strings.SplitAfter(extra, "\n") {
		if strings.HasPrefix(l, " ") {
			local.WriteString(l)
		} else {
			global.WriteString(l)
		}
	}
	return fmt.Sprintf(`concurrent = %d
%s
[[runners]]
  name = "bench-shell"
  url = %q
  token = %q
  executor = "shell"
  builds_dir = %q
  cache_dir = %q
%s`, concurrent, global.String(), w.coord.URL(), w.token, filepath.Join(runnerDir, "builds"), filepath.Join(runnerDir, "cache"), local.String())
}

// kubeConfig is a GitLab Runner config.toml for one Kubernetes runner,
// authenticated as a ServiceAccount with a bearer token.
func kubeConfig(w *world, concurrent int, k *kubeTarget, spec runnerSpec) string {
	helper := ""
	if spec.HelperImage != "" {
		helper = fmt.Sprintf("    helper_image = %q\n", spec.HelperImage)
	}
	if spec.HelperImageVolume {
		helper += "    helper_image_volume = true\n"
	}
	return fmt.Sprintf(`concurrent = %d

[[runners]]
  name = "bench-kubernetes"
  url = %q
  token = %q
  executor = "kubernetes"
  [runners.kubernetes]
    host = %q
    bearer_token = %q
    ca_file = %q
    namespace = %q
    image = %q
%s    pull_policy = "never"
`, concurrent, w.coord.URL(), w.token, k.host, k.token, k.caFile, k.ns, busyboxImage, helper)
}
