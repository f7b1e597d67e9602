package version

import (
	"runtime"
	"strings"
	"testing"
)

func TestInfo(t *testing.T) {
	old := Version
	t.Cleanup(func() { Version = old })

	Version = ""
	if got := Get().Version; got != "dev" {
		t.Fatalf("empty Version = %q, want dev", got)
	}
	Version = "1.2.3"
	i := Get()
	wantUA := "podrunner 1.2.3 (" + i.Branch + "; " + runtime.Version() + "; " + runtime.GOOS + "/" + runtime.GOARCH + ")"
	if ua := i.UserAgent(); ua != wantUA {
		t.Fatalf("UserAgent = %q, want %q", ua, wantUA)
	}
	s := i.String()
	for _, want := range []string{"Version:      1.2.3\n", "Git revision: ", "Git branch:   ", "GO version:   " + runtime.Version(), "Built:        ", "OS/Arch:      " + runtime.GOOS + "/" + runtime.GOARCH} {
		if !strings.Contains(s, want) {
			t.Errorf("String() lacks %q:\n%s", want, s)
		}
	}
	if n := strings.Count(s, "\n"); n != 6 {
		t.Errorf("String() has %d lines, want 6", n)
	}
}
