package helmchart

import (
	"reflect"
	"testing"
)

func TestSplit(t *testing.T) {
	manifest := []byte(`---
# Source: podrunner/templates/secret.yaml
apiVersion: v1
kind: Secret
metadata:
  name: a
  namespace: ns
data:
  x: "---"
---
# only a comment
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: b
`)
	docs, err := Split(manifest)
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 2 {
		t.Fatalf("%d docs, want 2: %+v", len(docs), docs)
	}
	if d := docs[0]; d.Kind != "Secret" || d.Name != "a" || d.Namespace != "ns" || d.Source != "podrunner/templates/secret.yaml" || d.APIVersion != "v1" {
		t.Errorf("doc 0 %+v", d)
	}
	if d := docs[1]; d.Kind != "Deployment" || d.Name != "b" || d.Source != "" {
		t.Errorf("doc 1 %+v", d)
	}
	if got := Find(docs, "Deployment", ""); len(got) != 1 || got[0].Name != "b" {
		t.Errorf("Find: %+v", got)
	}
	if got := Find(docs, "Secret", "b"); len(got) != 0 {
		t.Errorf("Find by name: %+v", got)
	}
	if _, err := Split([]byte("kind: [\n")); err == nil {
		t.Error("bad YAML: no error")
	}
}

func TestValueKeys(t *testing.T) {
	keys, err := ValueKeys([]byte(`
image:
  registry: r
  tag: t
podLabels: {}
rbac:
  rules: []
  create: false
concurrent: 10
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"image.registry", "image.tag", "podLabels", "rbac.rules", "rbac.create", "concurrent"}
	if !reflect.DeepEqual(keys, want) {
		t.Errorf("keys %v, want %v", keys, want)
	}
	if _, err := ValueKeys([]byte("- a\n")); err == nil {
		t.Error("a list at the top: no error")
	}
}
