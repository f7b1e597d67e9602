// Package helmchart runs the project's helm CLI (built by hack/helm/install)
// on the chart in deploy/helm/podrunner and splits what it renders, for the
// chart's tests and the e2e walk-through.
package helmchart

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ChartPath is the chart's folder, relative to the repository root.
const ChartPath = "deploy/helm/podrunner"

// RepoRoot returns the repository root: the nearest parent of the working
// directory whose go.mod declares the podrunner module.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && modulePath(data) == "github.com/podrunner/podrunner" {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("repository root not found: run from inside the podrunner repository")
		}
		dir = parent
	}
}

func modulePath(gomod []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(gomod))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module "); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	return ""
}

// Install runs hack/helm/install, which builds helm from the pinned Go
// module the first time (minutes) and returns the cached binary's path
// (about a second) afterwards.
func Install(ctx context.Context, root string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(root, "hack/helm/install"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("hack/helm/install: %w\n%s", err, stderr.Bytes())
	}
	bin := strings.TrimSpace(string(out))
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("hack/helm/install printed %q: %w", bin, err)
	}
	return bin, nil
}

// Doc is one object of a rendered manifest.
type Doc struct {
	APIVersion string
	Kind       string
	Name       string
	Namespace  string
	// Source is the template it came from ("# Source: ..." comment).
	Source string
	// YAML is the document itself, for a typed decoder.
	YAML []byte
}

// Split cuts a multi-document manifest (helm template's output) into its
// non-empty documents.
func Split(manifest []byte) ([]Doc, error) {
	var docs []Doc
	for i, part := range splitDocuments(manifest) {
		var head struct {
			APIVersion string `yaml:"apiVersion"`
			Kind       string `yaml:"kind"`
			Metadata   struct {
				Name      string `yaml:"name"`
				Namespace string `yaml:"namespace"`
			} `yaml:"metadata"`
		}
		if err := yaml.Unmarshal(part, &head); err != nil {
			return nil, fmt.Errorf("document %d: %w\n%s", i+1, err, part)
		}
		if head.Kind == "" {
			continue
		}
		d := Doc{APIVersion: head.APIVersion, Kind: head.Kind, Name: head.Metadata.Name, Namespace: head.Metadata.Namespace, YAML: part}
		if _, src, ok := strings.Cut(string(part), "# Source: "); ok {
			d.Source, _, _ = strings.Cut(src, "\n")
		}
		docs = append(docs, d)
	}
	return docs, nil
}

// splitDocuments splits on "---" lines.
func splitDocuments(manifest []byte) [][]byte {
	var out [][]byte
	var cur bytes.Buffer
	for _, line := range bytes.SplitAfter(manifest, []byte("\n")) {
		if t := bytes.TrimRight(line, " \t\r\n"); bytes.Equal(t, []byte("---")) {
			out = append(out, bytes.Clone(cur.Bytes()))
			cur.Reset()
			continue
		}
		cur.Write(line)
	}
	return append(out, bytes.Clone(cur.Bytes()))
}

// Find returns the documents of kind (and name, when not empty).
func Find(docs []Doc, kind, name string) []Doc {
	var out []Doc
	for _, d := range docs {
		if d.Kind == kind && (name == "" || d.Name == name) {
			out = append(out, d)
		}
	}
	return out
}

// ValueKeys lists the dotted keys of a values.yaml: every leaf, where an
// empty map, a list or a scalar is a leaf (image.tag, rbac.rules,
// podLabels), in file order.
func ValueKeys(valuesYAML []byte) ([]string, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(valuesYAML, &root); err != nil {
		return nil, fmt.Errorf("values: %w", err)
	}
	if len(root.Content) == 0 {
		return nil, nil
	}
	var keys []string
	var walk func(prefix string, n *yaml.Node)
	walk = func(prefix string, n *yaml.Node) {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i].Value, n.Content[i+1]
			if prefix != "" {
				k = prefix + "." + k
			}
			if v.Kind == yaml.MappingNode && len(v.Content) > 0 {
				walk(k, v)
				continue
			}
			keys = append(keys, k)
		}
	}
	if top := root.Content[0]; top.Kind == yaml.MappingNode {
		walk("", top)
	} else {
		return nil, errors.New("values: the top level is not a map")
	}
	return keys, nil
}
