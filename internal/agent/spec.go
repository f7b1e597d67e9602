// Package agent is the protocol between the runner and the podrunner agent
// that runs a job inside its pod (package agent/server): the job spec, the
// client of the agent's HTTP API and its limits, and where the pod keeps
// the agent. The manager links it; it links no go-git. See
// docs/kubernetes-executor.md.
package agent

import (
	"crypto/sha256"
	"encoding/hex"

	"github.com/podrunner/podrunner/internal/gitlab"
	"github.com/podrunner/podrunner/internal/job"
)

// SpecKey is the key of the spec in the job's Secret, and SpecFile the
// path the build container reads it from.
const (
	SpecKey  = "job.json"
	SpecDir  = "/podrunner-spec"
	SpecFile = SpecDir + "/" + SpecKey
	BinDir   = "/podrunner"
	Binary   = BinDir + "/podrunner-helper"
	// InstalledBinary is where helper images keep podrunner-helper.
	InstalledBinary = "/usr/local/bin/podrunner-helper"
	// HelperImageDir is where the helper image is mounted as an image
	// volume (helper_image_volume); the agent runs from there.
	HelperImageDir = "/podrunner-helper-image"
	// ImageVolumeBinary is podrunner-helper in the helper image volume.
	ImageVolumeBinary = HelperImageDir + InstalledBinary
	DefaultPort       = 8765
)

// FingerprintPrefix starts the agent's stdout line naming the SHA-256 of
// its TLS certificate (hex).
const FingerprintPrefix = "podrunner-agent tls-sha256="

// TokenSHA256 is the hex SHA-256 of token, as Await wants it.
func TokenSHA256(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// BootstrapCommand is the build container's command: it waits for the
// helper container to install the agent into BinDir, then becomes the
// agent with args ("agent run ARGS…"). Job images need /bin/sh for their
// scripts anyway; fractional sleep is not POSIX, hence the fallback.
func BootstrapCommand(args ...string) []string {
	const script = `i=0
while [ ! -x ` + Binary + ` ]; do
	i=$((i+1))
	if [ "$i" -gt 6000 ]; then echo "podrunner: the helper container did not install ` + Binary + `" >&2; exit 125; fi
	sleep 0.02 2>/dev/null || sleep 1
done
exec ` + Binary + ` agent run "$@"`
	return append([]string{"/bin/sh", "-c", script, "podrunner-bootstrap"}, args...)
}

// ImageVolumeCommand is the build container's command when the helper
// image is mounted at HelperImageDir: the agent runs from the image, so
// nothing waits for an install and the job image needs no shell for it.
func ImageVolumeCommand(args ...string) []string {
	return append([]string{ImageVolumeBinary, "agent", "run"}, args...)
}

// Spec is everything the agent needs, written by the runner into the
// job's Secret.
type Spec struct {
	// Token authenticates the runner to the agent's API (Bearer).
	Token string `json:"token"`
	// Version is the manager's version.Info.Build(); the helper refuses a
	// spec of another build (the image does not match the manager).
	Version string `json:"version,omitempty"`
	// Listen is the agent API's address, e.g. ":8765".
	Listen  string    `json:"listen"`
	Plan    *job.Plan `json:"plan"`
	Sources *Sources  `json:"sources,omitempty"`
	Mask    Mask      `json:"mask"`
	// Files are file variables: absolute path → content, written before
	// the first stage (mode 0600).
	Files map[string]string `json:"files,omitempty"`
	// Env is added to every stage's environment (the non-public
	// variables are exported by the scripts themselves).
	Env []string `json:"env,omitempty"`
}

// Sources tells the agent how to get the project's sources with go-git.
type Sources struct {
	RepoURL    string   `json:"repo_url"` // with credentials; never printed
	Ref        string   `json:"ref"`
	Sha        string   `json:"sha"`
	RefType    string   `json:"ref_type"`
	Refspecs   []string `json:"refspecs"`
	Depth      int      `json:"depth"`
	Strategy   string   `json:"strategy"`   // clone, fetch, none
	Submodules string   `json:"submodules"` // none, normal, recursive
	Checkout   bool     `json:"checkout"`
	Dir        string   `json:"dir"` // CI_PROJECT_DIR; plan.project_dir when empty
	// NoClean skips removing untracked and ignored files after the
	// checkout (GIT_CLEAN_FLAGS=none); other clean flags are not honoured,
	// the agent always cleans like "git clean -ffdx".
	NoClean bool `json:"no_clean,omitempty"`
	// FetchFlags is GIT_FETCH_EXTRA_FLAGS (job.Prepare applied its default,
	// --prune --quiet; empty for none); see agent/server's fetchFlags for what go-git
	// can honour.
	FetchFlags []string `json:"fetch_flags,omitempty"`
	// CABundle is extra trusted CA certificates (PEM) for an HTTPS
	// repository, e.g. the content of the runner's tls-ca-file.
	CABundle string `json:"ca_bundle,omitempty"`
}

// SourcesFrom is the agent's copy of the sources settings job.Prepare
// decided (dir is CI_PROJECT_DIR); it decides nothing itself.
func SourcesFrom(g *job.GitSettings, dir string) *Sources {
	return &Sources{
		RepoURL: g.URL, Ref: g.Ref, Sha: g.Sha, RefType: g.RefType, Refspecs: g.Refspecs, Depth: g.Depth,
		Strategy: g.Strategy, Submodules: g.Submodules, Checkout: g.Checkout, NoClean: g.CleanFlags == nil, FetchFlags: g.FetchFlags,
		CABundle: g.CABundle, Dir: dir,
	}
}

// Mask is what the agent's log hides.
type Mask struct {
	Values   []string `json:"values"`
	Prefixes []string `json:"prefixes"`
}

// Status is the answer of GET /v1/status.
type Status struct {
	State   string  `json:"state"` // running, done
	Result  *Result `json:"result,omitempty"`
	LogSize int64   `json:"log_size"`
}

// Result is how the job ended, as the agent saw it.
type Result struct {
	Success       bool                 `json:"success"`
	FailureReason gitlab.FailureReason `json:"failure_reason,omitempty"`
	ExitCode      int                  `json:"exit_code,omitempty"`
	// Stopped: the agent itself was stopped (SIGTERM: its pod deleted or
	// evicted, its container stopped) before the job ended. The other
	// fields then say only that the job did not finish; the runner asks
	// the pod why.
	Stopped bool `json:"stopped,omitempty"`
}

// States of Status.State.
const (
	StateRunning = "running"
	StateDone    = "done"
)
