// Command images builds podrunner's OCI image (busybox + podrunner: the
// manager image and what job pods run) for several platforms as one OCI
// index, reproducibly (same source, Go and busybox → same digest), and
// writes it to an OCI layout folder and/or pushes it to any registry.
//
//	cd hack/images && go run . --busybox linux/arm64=/tmp/bb-arm64/bin/busybox \
//	    --push registry.example.com/podrunner:dev
//
// Credentials come from the docker config (DOCKER_CONFIG or ~/.docker);
// a private CA from --ca or SSL_CERT_FILE. The busybox of the build machine
// (/bin/busybox, Debian busybox-static) is used for its own platform; for
// linux/arm64 fetch Debian's: dpkg --add-architecture arm64; apt-get update;
// apt-get download busybox-static:arm64; dpkg-deb -x busybox-static_*.deb DIR.
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func main() {
	if err := run(context.Background(), os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "hack/images: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("images", flag.ContinueOnError)
	platforms := fs.String("platforms", "linux/amd64,linux/arm64", "comma-separated platforms of the index")
	var busyboxes multiFlag
	fs.Var(&busyboxes, "busybox", "PLATFORM=PATH of a static busybox (repeatable); default linux/"+runtime.GOARCH+"=/bin/busybox")
	src := fs.String("src", "../..", "the podrunner module's folder")
	out := fs.String("out", "", "write the index as an OCI layout into this folder")
	push := fs.String("push", "", "push the index as REGISTRY/REPO:TAG")
	ca := fs.String("ca", "", "PEM file of a CA to trust for --push (besides the system's and SSL_CERT_FILE)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" && *push == "" {
		return errors.New("nothing to do: give --out DIR and/or --push REGISTRY/REPO:TAG")
	}
	bb := map[string]string{"linux/" + runtime.GOARCH: "/bin/busybox"}
	for _, b := range busyboxes {
		p, path, ok := strings.Cut(b, "=")
		if !ok {
			return fmt.Errorf("--busybox %q: want PLATFORM=PATH", b)
		}
		bb[p] = path
	}
	applets, err := appletList()
	if err != nil {
		return err
	}
	idx, err := buildIndex(ctx, *src, strings.Split(*platforms, ","), bb, applets)
	if err != nil {
		return err
	}
	d, err := idx.Digest()
	if err != nil {
		return err
	}
	fmt.Println(d)
	if *out != "" {
		if _, err := layout.Write(*out, idx); err != nil {
			return fmt.Errorf("write OCI layout %s: %w", *out, err)
		}
	}
	if *push != "" {
		ref, err := name.ParseReference(*push)
		if err != nil {
			return fmt.Errorf("--push %q: %w", *push, err)
		}
		tr, err := transport(*ca)
		if err != nil {
			return err
		}
		if err := remote.WriteIndex(ref, idx, remote.WithContext(ctx), remote.WithTransport(tr),
			remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
			return fmt.Errorf("push %s: %w", ref, err)
		}
		fmt.Fprintf(os.Stderr, "pushed %s@%s\n", ref, d)
	}
	return nil
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// appletList: the applet links to make, from the build machine's busybox
// (Debian's busybox-static has the same applets on every architecture).
func appletList() ([]string, error) {
	out, err := exec.Command("/bin/busybox", "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("list busybox applets with /bin/busybox (apt-get install busybox-static): %w", err)
	}
	return strings.Fields(string(out)), nil
}

func buildIndex(ctx context.Context, src string, platforms []string, busybox map[string]string, applets []string) (v1.ImageIndex, error) {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range platforms {
		plat, err := v1.ParsePlatform(p)
		if err != nil {
			return nil, fmt.Errorf("platform %q: %w", p, err)
		}
		bb, ok := busybox[p]
		if !ok {
			return nil, fmt.Errorf("no busybox for %s: give --busybox %s=PATH (see the header of main.go for Debian's)", p, p)
		}
		bins, err := buildPodrunner(ctx, src, plat)
		if err != nil {
			return nil, err
		}
		img, err := image(plat, bb, bins, applets)
		if err != nil {
			return nil, fmt.Errorf("image for %s: %w", p, err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: plat}})
	}
	return idx, nil
}

// buildPodrunner cross-compiles static podrunner and podrunner-helper
// (name → content); -trimpath and no VCS stamp keep them identical for
// identical sources.
func buildPodrunner(ctx context.Context, src string, p *v1.Platform) (map[string][]byte, error) {
	dir, err := os.MkdirTemp("", "podrunner-image-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags", "-s -w", "-o", dir+"/", "./cmd/podrunner", "./cmd/podrunner-helper")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Architecture)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build podrunner for %s/%s in %s: %w\n%s", p.OS, p.Architecture, src, err, out)
	}
	bins := map[string][]byte{}
	for _, n := range []string{"podrunner", "podrunner-helper"} {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			return nil, err
		}
		bins[n] = b
	}
	return bins, nil
}

// image: one layer (busybox userland + podrunner and podrunner-helper in
// /usr/local/bin) with a fixed time.
func image(p *v1.Platform, busyboxPath string, bins map[string][]byte, applets []string) (v1.Image, error) {
	bb, err := os.ReadFile(busyboxPath)
	if err != nil {
		return nil, fmt.Errorf("read busybox: %w", err)
	}
	layerTar, err := rootfsTar(bb, bins, applets)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{CreatedBy: "hack/images", Created: v1.Time{Time: time.Unix(0, 0).UTC()}}})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cf.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cf.Config.Cmd = []string{"/usr/local/bin/podrunner"}
	cf.Config.WorkingDir = "/"
	return mutate.ConfigFile(img, cf)
}

// rootfsTar is the image's file system as a tar with sorted names, owner
// 0 and a fixed mtime.
func rootfsTar(busybox []byte, bins map[string][]byte, applets []string) ([]byte, error) {
	type entry struct {
		hdr  tar.Header
		data []byte
	}
	epoch := time.Unix(0, 0).UTC()
	var es []entry
	dir := func(n string, mode int64) {
		es = append(es, entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: n + "/", Mode: mode}})
	}
	file := func(n string, mode int64, b []byte) {
		es = append(es, entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: mode, Size: int64(len(b))}, data: b})
	}
	for _, d := range []string{"bin", "sbin", "usr", "usr/bin", "usr/sbin", "usr/local", "usr/local/bin", "etc", "home", "proc", "sys", "dev", "var"} {
		dir(d, 0o755)
	}
	dir("root", 0o700)
	dir("tmp", 0o1777)
	dir("var/tmp", 0o1777)
	file("bin/busybox", 0o755, busybox)
	for n, b := range bins {
		file("usr/local/bin/"+n, 0o755, b)
	}
	file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"))
	file("etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n"))
	file("etc/nsswitch.conf", 0o644, []byte("hosts: files dns\n"))
	seen := map[string]bool{"bin/busybox": true}
	for _, a := range applets {
		a = strings.TrimPrefix(a, "/")
		if seen[a] || !strings.Contains(a, "/") {
			continue
		}
		seen[a] = true
		es = append(es, entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: a, Linkname: "/bin/busybox", Mode: 0o777}})
	}
	sort.Slice(es, func(i, j int) bool { return es[i].hdr.Name < es[j].hdr.Name })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range es {
		h := e.hdr
		h.ModTime, h.Format = epoch, tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			return nil, fmt.Errorf("tar %s: %w", h.Name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, fmt.Errorf("tar %s: %w", h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// transport trusts the system's CAs (SSL_CERT_FILE included) plus caFile.
func transport(caFile string) (http.RoundTripper, error) {
	tr := remote.DefaultTransport.(*http.Transport).Clone()
	if caFile == "" {
		return tr, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--ca: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--ca %s: no PEM certificate in it", caFile)
	}
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return tr, nil
}
