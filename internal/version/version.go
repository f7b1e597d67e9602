// Package version holds the build identity of podrunner. Version, Revision,
// Branch and BuiltAt are set at link time:
//
//	go build -ldflags "-X github.com/podrunner/podrunner/internal/version.Version=1.2.3 \
//	  -X github.com/podrunner/podrunner/internal/version.Revision=abcdef12 \
//	  -X github.com/podrunner/podrunner/internal/version.Branch=main \
//	  -X github.com/podrunner/podrunner/internal/version.BuiltAt=2026-01-02T03:04:05+0000"
package version

import (
	"fmt"
	"runtime"
	"strings"
)

// Name is the program name used in the User-Agent and in logs.
const Name = "podrunner"

// Link-time variables. They are plain strings so -ldflags -X can set them.
var (
	Version  = "dev"
	Revision = "dev"
	Branch   = "dev"
	BuiltAt  = "dev"
)

// Info is a snapshot of the build identity.
type Info struct {
	Name      string
	Version   string
	Revision  string
	Branch    string
	GoVersion string
	BuiltAt   string
	OS        string
	Arch      string
}

// Get returns the build identity; empty link-time values read as "dev".
func Get() Info {
	return Info{
		Name:      Name,
		Version:   orDev(Version),
		Revision:  orDev(Revision),
		Branch:    orDev(Branch),
		GoVersion: runtime.Version(),
		BuiltAt:   orDev(BuiltAt),
		OS:        runtime.GOOS,
		Arch:      runtime.GOARCH,
	}
}

func orDev(s string) string {
	if strings.TrimSpace(s) == "" {
		return "dev"
	}
	return s
}

// Platform is "os/arch".
func (i Info) Platform() string { return i.OS + "/" + i.Arch }

// UserAgent is the User-Agent header value, shaped like GitLab Runner's:
// "podrunner 1.2.3 (main; go1.26.0; linux/amd64)".
func (i Info) UserAgent() string {
	return fmt.Sprintf("%s %s (%s; %s; %s)", i.Name, i.Version, i.Branch, i.GoVersion, i.Platform())
}

// String is the multi-line output of `podrunner version`, with the same
// field names as `gitlab-runner --version` so scripts that grep it keep
// working.
func (i Info) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Version:      %s\n", i.Version)
	fmt.Fprintf(&b, "Git revision: %s\n", i.Revision)
	fmt.Fprintf(&b, "Git branch:   %s\n", i.Branch)
	fmt.Fprintf(&b, "GO version:   %s\n", i.GoVersion)
	fmt.Fprintf(&b, "Built:        %s\n", i.BuiltAt)
	fmt.Fprintf(&b, "OS/Arch:      %s\n", i.Platform())
	return b.String()
}

// UserAgent is Get().UserAgent().
func UserAgent() string { return Get().UserAgent() }

// Build is "VERSION (REVISION)": what the manager and the helper of one
// build share, and compare to refuse a mismatched helper image.
func (i Info) Build() string { return i.Version + " (" + i.Revision + ")" }
