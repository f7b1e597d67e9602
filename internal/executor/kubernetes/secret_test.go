package kubernetes

import (
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podrunner/podrunner/internal/job"
)

func TestSourcesFor(t *testing.T) {
	base := func() *job.Payload {
		return &job.Payload{Token: "tok", JobInfo: job.JobInfo{ProjectFullPath: "g/p"}, GitInfo: job.GitInfo{
			RepoURL: "https://gitlab-ci-token:tok@gitlab.example.com/g/p.git", Ref: "main", Sha: "abc", RefType: "branch", Depth: 50}}
	}
	vars := func(kv ...string) job.Variables {
		vs := job.Variables{pub("CI_PROJECT_DIR", "/builds/g/p")}
		for i := 0; i < len(kv); i += 2 {
			vs = append(vs, pub(kv[i], kv[i+1]))
		}
		return vs
	}
	s, err := SourcesFor(base(), vars(), "")
	if err != nil {
		t.Fatal(err)
	}
	if s.Strategy != "clone" || s.Depth != 50 || !s.Checkout || s.Submodules != "none" || s.Dir != "/builds/g/p" ||
		strings.Join(s.Refspecs, " ") != "+refs/heads/main:refs/remotes/origin/main" || s.RepoURL != base().GitInfo.RepoURL {
		t.Errorf("defaults: %+v", s)
	}
	p := base()
	p.AllowGitFetch = true
	p.GitInfo.RefType = "tag"
	p.GitInfo.Ref = "v1"
	s, err = SourcesFor(p, vars("GIT_DEPTH", "3", "GIT_SUBMODULE_STRATEGY", "recursive", "GIT_CHECKOUT", "false"), "https://mirror.example.com/git/")
	if err != nil {
		t.Fatal(err)
	}
	if s.Strategy != "fetch" || s.Depth != 3 || s.Checkout || s.Submodules != "recursive" ||
		s.RepoURL != "https://gitlab-ci-token:tok@mirror.example.com/git/g/p.git" || s.Refspecs[0] != "+refs/tags/v1:refs/tags/v1" {
		t.Errorf("variables: %+v", s)
	}
	s, err = SourcesFor(base(), vars("GIT_STRATEGY", "none"), "")
	if err != nil || s.RepoURL != "" || s.Strategy != "none" {
		t.Errorf("none: %+v %v", s, err)
	}
	for _, bad := range [][]string{{"GIT_STRATEGY", "copy"}, {"GIT_DEPTH", "-1"}, {"GIT_SUBMODULE_STRATEGY", "all"}, {"GIT_CHECKOUT", "maybe"}} {
		if _, err := SourcesFor(base(), vars(bad...), ""); err == nil || !strings.Contains(err.Error(), bad[0]) {
			t.Errorf("%s=%s: err = %v", bad[0], bad[1], err)
		}
	}
	p = base()
	p.GitInfo.RepoURL = ""
	if _, err := SourcesFor(p, vars(), ""); err == nil {
		t.Error("empty repo_url accepted")
	}
}

func TestSecretOwner(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", UID: "u1"}}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "p", OwnerReferences: []metav1.OwnerReference{
		{APIVersion: "v1", Kind: "Pod", Name: "p", UID: "old"},
		{APIVersion: "apps/v1", Kind: "Deployment", Name: "keep", UID: "d"},
	}}}
	SetSecretOwner(sec, pod)
	SetSecretOwner(sec, pod) // idempotent
	if len(sec.OwnerReferences) != 2 {
		t.Fatalf("refs %+v", sec.OwnerReferences)
	}
	r := sec.OwnerReferences[1]
	if r.Kind != "Pod" || r.APIVersion != "v1" || r.UID != "u1" || *r.Controller || *r.BlockOwnerDeletion {
		t.Errorf("ref %+v", r)
	}
	patch, err := SecretOwnerPatch(pod)
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Metadata struct {
			OwnerReferences []metav1.OwnerReference `json:"ownerReferences"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(patch, &m); err != nil || len(m.Metadata.OwnerReferences) != 1 || m.Metadata.OwnerReferences[0].UID != "u1" {
		t.Errorf("patch %s: %v", patch, err)
	}
	if _, err := SecretOwnerPatch(&corev1.Pod{}); err == nil {
		t.Error("patch for a pod without UID")
	}
}

func TestSecretTooLarge(t *testing.T) {
	req := podTestRequest(t)
	req.Files = map[string]string{"/big": strings.Repeat("x", 1<<20)}
	_, _, err := BuildPod(req)
	if err == nil || !strings.Contains(err.Error(), "do not fit in a Kubernetes Secret (1 MiB)") {
		t.Fatalf("err = %v", err)
	}
}

func TestMaskedPrefix(t *testing.T) {
	got, err := maskedPrefix([]byte("token glpat-abcdef and s3cr3t!"), job.Mask{Values: []string{"s3cr3t"}})
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "token glpat-[MASKED] and [MASKED]!" {
		t.Errorf("masked prefix %q", got)
	}
	if _, err := maskedPrefix(make([]byte, maxTracePrefix+1), job.Mask{}); err == nil {
		t.Error("oversized prefix accepted")
	}
}
