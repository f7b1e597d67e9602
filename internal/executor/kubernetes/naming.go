package kubernetes

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/podrunner/podrunner/internal/job"
)

// Pod metadata keys besides LabelManaged, LabelRunner and LabelJobID
// (watch.go). GitLab Runner's keys are kept so existing dashboards,
// policies and cleanup scripts keep working.
const (
	LabelProjectID  = "podrunner.io/project-id"
	LabelPipelineID = "podrunner.io/pipeline-id"

	// AnnotationTracePrefix holds (base64) what the runner wrote to the job
	// trace before the agent's log, so that a restarted runner can rebuild
	// the whole trace. Masked values are replaced by [MASKED] in it.
	AnnotationTracePrefix = "podrunner.io/trace-prefix"
	// AnnotationAgentPort is the port of the agent's API.
	AnnotationAgentPort = "podrunner.io/agent-port"

	labelGitLabPod = "pod"

	gitlabJobPrefix     = "job.runner.gitlab.com/"
	gitlabProjectPrefix = "project.runner.gitlab.com/"
	gitlabManagerPrefix = "manager.runner.gitlab.com/"
)

// Name parts, as GitLab Runner's generateNameForK8sResources.
const (
	nameSuffixLen    = 8
	namePrefixMaxLen = 54
	dns1123LabelMax  = 63
	labelValueMax    = 63
	nameAlphabet     = "abcdefghijklmnopqrstuvwxyz0123456789"
	maxTracePrefix   = 64 << 10 // annotations share a 256 KiB budget
)

// PodName is the name of a job's pod (and of its Secret):
// runner-<short token>-project-<id>-concurrent-<slot>-<8 random [a-z0-9]>.
// The prefix is made RFC 1123 compatible and cut to 54 characters, so the
// name is a valid DNS label (≤ 63).
func PodName(shortToken string, projectID int64, slot int) string {
	name, err := podName(rand.Reader, shortToken, projectID, slot)
	if err != nil {
		// crypto/rand does not fail on supported platforms (Go ≥ 1.24
		// crashes the program instead of returning an error).
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return name
}

func podName(r io.Reader, shortToken string, projectID int64, slot int) (string, error) {
	prefix := fmt.Sprintf("runner-%s-project-%d-concurrent-%d", shortToken, projectID, slot)
	prefix = makeRFC1123(prefix)
	if len(prefix) > namePrefixMaxLen {
		prefix = strings.TrimRight(prefix[:namePrefixMaxLen], "-")
	}
	suffix, err := randomString(r, nameSuffixLen)
	if err != nil {
		return "", fmt.Errorf("random pod name suffix: %w", err)
	}
	if prefix == "" {
		return suffix, nil
	}
	return prefix + "-" + suffix, nil
}

// randomString draws n characters of [a-z0-9] from r without modulo bias.
func randomString(r io.Reader, n int) (string, error) {
	out := make([]byte, 0, n)
	buf := make([]byte, n*2)
	for len(out) < n {
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		for _, b := range buf {
			// 252 = 7*36: values above are dropped to keep it uniform.
			if b < 252 && len(out) < n {
				out = append(out, nameAlphabet[int(b)%len(nameAlphabet)])
			}
		}
	}
	return string(out), nil
}

// makeRFC1123 lowercases s, turns dots and underscores into '-', drops
// every other character outside [a-z0-9-] and trims non-alphanumerics from
// both ends (GitLab Runner's MakeRFC1123Compatible), cut to 63.
func makeRFC1123(s string) string {
	var b strings.Builder
	for _, c := range strings.ToLower(s) {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-':
			b.WriteRune(c)
		case c == '.' || c == '_':
			b.WriteByte('-')
		}
	}
	out := strings.Trim(b.String(), "-")
	if len(out) > dns1123LabelMax {
		out = strings.TrimRight(out[:dns1123LabelMax], "-")
	}
	return out
}

// LabelValue makes s a valid label value: characters outside
// [A-Za-z0-9._-] become '_', it is cut to 63 characters and must begin
// and end with an alphanumeric character (others are trimmed).
func LabelValue(s string) string {
	out := make([]byte, 0, len(s))
	for _, r := range s {
		if r < 128 && (isAlnum(byte(r)) || r == '.' || r == '_' || r == '-') {
			out = append(out, byte(r))
		} else {
			out = append(out, '_')
		}
	}
	v := trimNonAlnum(string(out))
	if len(v) > labelValueMax {
		v = trimNonAlnum(v[:labelValueMax])
	}
	return v
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func trimNonAlnum(s string) string {
	return strings.TrimFunc(s, func(r rune) bool { return r > 127 || !isAlnum(byte(r)) })
}

// MetaInput is what the pod's labels and annotations are made of.
type MetaInput struct {
	PodName    string
	ShortToken string
	RunnerName string
	// SystemID is the owning manager's system_id (no label when empty).
	SystemID  string
	Slot      int
	Payload   *job.Payload
	Variables job.Variables
}

// Labels returns the labels podrunner and GitLab Runner put on a job's pod
// and Secret (before pod_labels). Values are sanitised label values.
func Labels(in MetaInput) map[string]string {
	p := in.Payload
	v := in.Variables
	jobURL := jobURL(p, v)
	l := map[string]string{
		LabelManaged:    "true",
		LabelRunner:     in.ShortToken,
		LabelJobID:      strconv.FormatInt(p.ID, 10),
		LabelProjectID:  strconv.FormatInt(p.JobInfo.ProjectID, 10),
		LabelPipelineID: strconv.FormatInt(p.JobInfo.PipelineID, 10),

		labelGitLabPod:                         uniqueName(in.ShortToken, p, in.Slot),
		gitlabJobPrefix + "pod":                uniqueName(in.ShortToken, p, in.Slot),
		gitlabJobPrefix + "id":                 strconv.FormatInt(p.ID, 10),
		gitlabJobPrefix + "sha":                p.GitInfo.Sha,
		gitlabJobPrefix + "before_sha":         p.GitInfo.BeforeSha,
		gitlabJobPrefix + "ref":                p.GitInfo.Ref,
		gitlabJobPrefix + "name":               p.JobInfo.Name,
		gitlabJobPrefix + "url":                jobURL,
		gitlabJobPrefix + "pipeline_id":        strconv.FormatInt(p.JobInfo.PipelineID, 10),
		gitlabProjectPrefix + "id":             strconv.FormatInt(p.JobInfo.ProjectID, 10),
		gitlabProjectPrefix + "name":           p.JobInfo.ProjectName,
		gitlabProjectPrefix + "namespace":      publicValue(v, "CI_PROJECT_NAMESPACE"),
		gitlabProjectPrefix + "namespace-id":   publicValue(v, "CI_PROJECT_NAMESPACE_ID"),
		gitlabProjectPrefix + "root-namespace": publicValue(v, "CI_PROJECT_ROOT_NAMESPACE"),
		gitlabManagerPrefix + "name":           in.RunnerName,
		gitlabManagerPrefix + "id-short":       in.ShortToken,
	}
	if in.SystemID != "" {
		l[LabelSystemID] = in.SystemID
	}
	if p.JobInfo.NamespaceID != 0 && l[gitlabProjectPrefix+"namespace-id"] == "" {
		l[gitlabProjectPrefix+"namespace-id"] = strconv.FormatInt(p.JobInfo.NamespaceID, 10)
	}
	if p.JobInfo.RootNamespaceID != 0 {
		l[gitlabProjectPrefix+"root-namespace-id"] = strconv.FormatInt(p.JobInfo.RootNamespaceID, 10)
	}
	for k, val := range l {
		l[k] = LabelValue(val)
	}
	return l
}

// Annotations returns the annotations of a job's pod (before
// pod_annotations). tracePrefix must already be masked.
func Annotations(in MetaInput, tracePrefix []byte, agentPort int) map[string]string {
	p := in.Payload
	timeout := p.RunnerInfo.Timeout
	if timeout <= 0 {
		timeout = job.DefaultTimeoutSeconds
	}
	a := map[string]string{
		gitlabJobPrefix + "id":         strconv.FormatInt(p.ID, 10),
		gitlabJobPrefix + "url":        jobURL(p, in.Variables),
		gitlabJobPrefix + "sha":        p.GitInfo.Sha,
		gitlabJobPrefix + "before_sha": p.GitInfo.BeforeSha,
		gitlabJobPrefix + "ref":        p.GitInfo.Ref,
		gitlabJobPrefix + "name":       p.JobInfo.Name,
		gitlabJobPrefix + "timeout":    (time.Duration(timeout) * time.Second).String(),
		gitlabProjectPrefix + "id":     strconv.FormatInt(p.JobInfo.ProjectID, 10),
		AnnotationTracePrefix:          base64.StdEncoding.EncodeToString(tracePrefix),
		AnnotationAgentPort:            strconv.Itoa(agentPort),
	}
	return a
}

// uniqueName is GitLab Runner's ProjectUniqueName.
func uniqueName(shortToken string, p *job.Payload, slot int) string {
	return fmt.Sprintf("runner-%s-project-%d-concurrent-%d", shortToken, p.JobInfo.ProjectID, slot)
}

// jobURL is <project url>/-/jobs/<id> (CI_JOB_URL when GitLab sent it).
func jobURL(p *job.Payload, v job.Variables) string {
	if u := publicValue(v, "CI_JOB_URL"); u != "" {
		return u
	}
	if u := publicValue(v, "CI_PROJECT_URL"); u != "" {
		return strings.TrimSuffix(u, "/") + "/-/jobs/" + strconv.FormatInt(p.ID, 10)
	}
	return ""
}

// publicValue is the value of a public variable; a non-public one never
// reaches pod metadata.
func publicValue(vs job.Variables, key string) string {
	v, ok := vs.Lookup(key)
	if !ok || !v.Public || v.Masked || v.File {
		return ""
	}
	return v.Value
}
