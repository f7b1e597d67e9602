package trace

import (
	"context"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"

	"github.com/podrunner/podrunner/internal/gitlab"
)

// A log left by a dead runner process: the unsent rest of the file and the
// tail reach GitLab, with the checksum of the whole; without the file the
// tail goes at GitLab's offset and the state without a checksum.
func TestLeftoverFinish(t *testing.T) {
	const tail = "\nERROR: died\n"
	for _, tc := range []struct {
		name     string
		file     bool
		sent     int64
		wantSent string // what GitLab receives from sent on
		wantSum  bool
	}{
		{"file, part sent", true, 6, "world\n" + tail, true},
		{"file, all sent", true, 12, tail, true},
		{"file lost", false, 6, tail, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "podrunner-trace-1")
			if tc.file {
				if err := os.WriteFile(path, []byte("hello world\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			src, err := OpenLeftover(path, tc.sent, tail)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			has := "hello world\n"[:tc.sent]
			api := &fakeGitLab{trace: []byte(has)}
			opts := fastOpts()
			opts.Sent = tc.sent
			s := NewSender(api, src, opts)
			if err := s.Finish(context.Background(), gitlab.UpdateJobRequest{State: gitlab.StateFailed}); err != nil {
				t.Fatal(err)
			}
			if got := string(api.trace); got != has+tc.wantSent {
				t.Fatalf("GitLab holds %q; want %q", got, has+tc.wantSent)
			}
			finals := api.finals()
			if len(finals) != 1 {
				t.Fatalf("%d final updates", len(finals))
			}
			final := finals[0]
			want := ""
			if tc.wantSum {
				want = fmt.Sprintf("crc32:%08x", crc32.ChecksumIEEE([]byte("hello world\n"+tail)))
			}
			if final.Checksum != want {
				t.Fatalf("checksum %q; want %q", final.Checksum, want)
			}
		})
	}
}
