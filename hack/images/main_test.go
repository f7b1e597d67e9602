package main

import (
	"os"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

func digestOf(t *testing.T, p *v1.Platform, bb string, pr []byte) v1.Hash {
	t.Helper()
	img, err := image(p, bb, map[string][]byte{"podrunner": pr, "podrunner-helper": append([]byte("helper-"), pr...)}, []string{"/bin/sh", "/usr/bin/env", "/bin/busybox"})
	if err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestImageReproducible: the same inputs give the same digest; a different
// binary or platform gives another.
func TestImageReproducible(t *testing.T) {
	bb := t.TempDir() + "/busybox"
	writeFile(t, bb, "fake busybox")
	amd := &v1.Platform{OS: "linux", Architecture: "amd64"}
	arm := &v1.Platform{OS: "linux", Architecture: "arm64"}
	a1, a2 := digestOf(t, amd, bb, []byte("podrunner-1")), digestOf(t, amd, bb, []byte("podrunner-1"))
	if a1 != a2 {
		t.Fatalf("same inputs, digests %s and %s", a1, a2)
	}
	if b := digestOf(t, amd, bb, []byte("podrunner-2")); b == a1 {
		t.Error("another podrunner binary, same digest")
	}
	if c := digestOf(t, arm, bb, []byte("podrunner-1")); c == a1 {
		t.Error("another platform, same digest")
	}
}

// TestImageContent: the config names the platform and podrunner; the index
// holds one manifest per platform.
func TestImageContent(t *testing.T) {
	bb := t.TempDir() + "/busybox"
	writeFile(t, bb, "fake busybox")
	arm := &v1.Platform{OS: "linux", Architecture: "arm64"}
	img, err := image(arm, bb, map[string][]byte{"podrunner": []byte("pr"), "podrunner-helper": []byte("h")}, []string{"/bin/sh"})
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Architecture != "arm64" || cf.OS != "linux" || len(cf.Config.Cmd) != 1 || cf.Config.Cmd[0] != "/usr/local/bin/podrunner" || cf.Created.Unix() != 0 {
		t.Errorf("config = %+v", cf)
	}
	idx := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: arm}})
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 1 || m.Manifests[0].Platform.Architecture != "arm64" {
		t.Errorf("index = %+v", m.Manifests)
	}
	if _, err := image(arm, bb+"-missing", map[string][]byte{"podrunner": []byte("pr")}, nil); err == nil {
		t.Error("missing busybox: no error")
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
}
