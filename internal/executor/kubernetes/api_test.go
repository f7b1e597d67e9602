package kubernetes

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// fakeAPI adapts client-go's (fake) clientset to kubeAPI.
type fakeAPI struct{ cs kubernetes.Interface }

func (f fakeAPI) Pods(ns string) podAPI       { return f.cs.CoreV1().Pods(ns) }
func (f fakeAPI) Secrets(ns string) secretAPI { return f.cs.CoreV1().Secrets(ns) }
func (f fakeAPI) Events(ns string) eventAPI   { return f.cs.CoreV1().Events(ns) }
func (f fakeAPI) Nodes() nodeAPI              { return f.cs.CoreV1().Nodes() }
func (f fakeAPI) Leases(ns string) leaseAPI   { return f.cs.CoordinationV1().Leases(ns) }
func (f fakeAPI) PodLogs(ctx context.Context, ns, pod string, opts *corev1.PodLogOptions) (io.ReadCloser, error) {
	return f.cs.CoreV1().Pods(ns).GetLogs(pod, opts).Stream(ctx)
}

// The fake clientset cannot stream lists; client-go's informers ask.
func (f fakeAPI) IsWatchListSemanticsUnSupported() bool { return true }

// The runner's own client sends each call to the path and with the
// parameters the API server documents, and decodes what it answers.
func TestRESTAPIRequests(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, strings.TrimSpace(r.Method+" "+r.URL.Path+"?"+r.URL.RawQuery+" "+r.Header.Get("Content-Type")))
		w.Header().Set("Content-Type", "application/json")
		switch {
		case strings.HasSuffix(r.URL.Path, "/log"):
			w.Header().Set("Content-Type", "text/plain")
			_, _ = io.WriteString(w, "agent fingerprint\n")
		case strings.Contains(r.URL.Path, "/leases/"):
			_, _ = io.WriteString(w, `{"kind":"Lease","apiVersion":"coordination.k8s.io/v1","metadata":{"name":"l","namespace":"ns","resourceVersion":"7"}}`)
		case strings.Contains(r.URL.Path, "/pods/missing"):
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404,"message":"pods \"missing\" not found"}`)
		case r.Method == http.MethodPost:
			// Echo the object in the encoding it came in (protobuf, as
			// client-go's clients of built-in types prefer).
			w.Header().Set("Content-Type", r.Header.Get("Content-Type"))
			body, _ := io.ReadAll(r.Body)
			_, _ = w.Write(body)
		default:
			_, _ = io.WriteString(w, `{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"9"},"items":[{"metadata":{"name":"p"}}]}`)
		}
	}))
	defer srv.Close()
	api, err := newAPI(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	rc, err := api.PodLogs(ctx, "ns", "p", &corev1.PodLogOptions{Container: ContainerBuild, Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "agent fingerprint\n" {
		t.Errorf("log = %q", b)
	}
	l, err := api.Leases("ns").Get(ctx, "l", metav1.GetOptions{})
	if err != nil || l.ResourceVersion != "7" {
		t.Errorf("lease = %+v, %v", l, err)
	}
	pods, err := api.Pods("ns").List(ctx, metav1.ListOptions{LabelSelector: "a=b"})
	if err != nil || len(pods.Items) != 1 || pods.Items[0].Name != "p" {
		t.Errorf("pods = %+v, %v", pods, err)
	}
	s, err := api.Secrets("ns").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s"}, StringData: map[string]string{"k": "v"}}, metav1.CreateOptions{})
	if err != nil || s.Name != "s" || s.StringData["k"] != "v" {
		t.Errorf("secret = %+v, %v", s, err)
	}
	if _, err := api.Pods("ns").Get(ctx, "missing", metav1.GetOptions{}); err == nil || !strings.Contains(err.Error(), `pods "missing" not found`) {
		t.Errorf("missing pod: %v", err)
	}
	want := []string{
		"GET /api/v1/namespaces/ns/pods/p/log?container=build&follow=true",
		"GET /apis/coordination.k8s.io/v1/namespaces/ns/leases/l?",
		"GET /api/v1/namespaces/ns/pods?labelSelector=a%3Db",
		"POST /api/v1/namespaces/ns/secrets? application/vnd.kubernetes.protobuf",
		"GET /api/v1/namespaces/ns/pods/missing?",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
