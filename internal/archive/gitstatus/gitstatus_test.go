package gitstatus

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/podrunner/podrunner/internal/archive"
)

// Where no git binary is installed, archive lists untracked files with
// go-git, and finds what git finds: neither tracked nor ignored, at any
// depth.
func TestSelectUntrackedWithoutGit(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git to build the repository with")
	}
	root := t.TempDir()
	for f, data := range map[string]string{
		"tracked.txt": "t", ".gitignore": "*.log\n", "out/new.txt": "n", "ignored.log": "i", "new.txt": "n",
	} {
		p := filepath.Join(root, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"init", "-q"}, {"add", "tracked.txt", ".gitignore"}} {
		cmd := exec.Command("git", args...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	want, err := archive.Select(context.Background(), root, archive.Spec{Untracked: true})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(want, []string{"new.txt", "out/new.txt"}) {
		t.Fatalf("with git: %q", want)
	}
	t.Setenv("PATH", t.TempDir())
	got, err := archive.Select(context.Background(), root, archive.Spec{Untracked: true})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("without git: %q, want %q as git lists them", got, want)
	}
}
