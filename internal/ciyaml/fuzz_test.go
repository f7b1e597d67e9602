package ciyaml

import "testing"

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		full,
		"build:\n  script: x\n",
		"a: &a [*a]\n",
		"x: &x {<<: *x}\nb:\n  <<: *x\n  script: y\n",
		"spec: {}\n---\nb:\n  script: [[x]]\n",
		"b:\n  script: x\n  timeout: 1:2:3\n",
		"b:\n  script: x\n  allow_failure: {exit_codes: 1}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.yml", data)
		if err == nil && cfg == nil {
			t.Fatal("nil config without error")
		}
		if err != nil && err.Error() == "" {
			t.Fatal("empty error message")
		}
	})
}

func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"1h 30m", "10 minutes", "01:30:00", "3600", "1.5h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if d, err := ParseDuration(s); err == nil && d < 0 {
			t.Fatalf("negative duration %v for %q", d, s)
		}
	})
}
