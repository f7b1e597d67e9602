package cache

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestHTTPStoreAnswers: how each answer of a store to a pre-signed URL
// turns into "no cache", success or a message that names the store and
// what to check, and never repeats the URL's signature.
func TestHTTPStoreAnswers(t *testing.T) {
	const (
		s3Query    = "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=SECRETSIG"
		azureQuery = "?sv=2023-11-03&sr=b&sp=r&sig=SECRETSIG"
		gcsQuery   = "?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Signature=SECRETSIG"
	)
	for _, tc := range []struct {
		name   string
		query  string
		put    bool
		status int
		body   string
		want   string // error substring; "" success; "notfound" ErrNotFound
	}{
		{"get ok", s3Query, false, 200, "PK", ""},
		{"get missing object", s3Query, false, 404, "<Error><Code>NoSuchKey</Code></Error>", "notfound"},
		{"get missing object, no body", gcsQuery, false, 404, "", "notfound"},
		{"get missing azure blob", azureQuery, false, 404, "<Error><Code>BlobNotFound</Code></Error>", "notfound"},
		{"get missing bucket", s3Query, false, 404, "<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message></Error>", "does not exist on S3: create it or fix [runners.cache.s3]"},
		{"put missing container", azureQuery, true, 404, "<?xml version=\"1.0\"?><Error><Code>ContainerNotFound</Code><Message>The specified container does not exist.\nRequestId:1</Message></Error>", "(ContainerNotFound: The specified container does not exist.): the bucket or container does not exist on Azure Blob Storage"},
		{"put missing gcs bucket", gcsQuery, true, 404, "", "Google Cloud Storage has no such bucket or container: create it or fix [runners.cache.gcs]"},
		{"get refused s3", s3Query, false, 403, "<Error><Code>SignatureDoesNotMatch</Code><Message>bad</Message></Error>", "403 Forbidden (SignatureDoesNotMatch: bad): S3 refused the runner's pre-signed URL: check the credentials in [runners.cache.s3]"},
		{"put refused azure", azureQuery, true, 403, "<Error><Code>AuthenticationFailed</Code></Error>", "Azure Blob Storage refused"},
		{"put expired gcs", gcsQuery, true, 400, "<Error><Code>ExpiredToken</Code></Error>", "400 Bad Request (ExpiredToken) from Google Cloud Storage"},
		{"put ok", s3Query, true, 200, "", ""},
		{"put unknown store", "?token=SECRETSIG", true, 500, "oops", "500 Internal Server Error from the cache store"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got struct {
				method, header, body string
				length               int64
			}
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				got.method, got.header, got.body, got.length = r.Method, r.Header.Get("X-Ms-Blob-Type"), string(b), r.ContentLength
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			u := srv.URL + "/bucket/runner/x/project/1/key" + tc.query
			h := NewHTTP(time.Minute, http.Header{"X-Ms-Blob-Type": {"BlockBlob"}})
			h.Retries = []time.Duration{}
			var err error
			if tc.put {
				err = h.Put(context.Background(), u, strings.NewReader("archive"))
				if got.method != http.MethodPut || got.body != "archive" || got.length != 7 || got.header != "BlockBlob" {
					t.Errorf("PUT sent %+v, want the body with its Content-Length and the signer's header", got)
				}
			} else {
				var rc io.ReadCloser
				rc, err = h.Get(context.Background(), u)
				if err == nil {
					b, _ := io.ReadAll(rc)
					rc.Close()
					if string(b) != tc.body {
						t.Errorf("body %q", b)
					}
				}
			}
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("%v", err)
			case tc.want == "notfound" && !errors.Is(err, ErrNotFound):
				t.Errorf("got %v, want ErrNotFound", err)
			case tc.want != "" && tc.want != "notfound" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want an error with %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "SECRETSIG") {
				t.Errorf("the error shows the signature: %v", err)
			}
		})
	}
}

// TestHTTPStoreUnreachable: a transport error names the URL without its
// signature (net/http's own message would carry the whole URL).
func TestHTTPStoreUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	u := srv.URL + "/b/k?X-Amz-Signature=SECRETSIG"
	srv.Close()
	h := NewHTTP(time.Minute, nil)
	h.Retries = []time.Duration{0}
	_, gerr := h.Get(context.Background(), u)
	perr := h.Put(context.Background(), u, strings.NewReader("x"))
	for _, err := range []error{gerr, perr} {
		if err == nil || strings.Contains(err.Error(), "SECRETSIG") || !strings.Contains(err.Error(), srv.URL+"/b/k") {
			t.Errorf("got %v, want an error naming %s/b/k without the signature", err, srv.URL)
		}
	}
	if d := h.Describe(u); d != srv.URL+"/b/k" {
		t.Errorf("Describe: %q", d)
	}
}

// TestHTTPStoreRetries: a 5xx, 429 or 408 is tried again (the whole
// archive from its start for a PUT), a 4xx is not, and the tries are
// bounded.
func TestHTTPStoreRetries(t *testing.T) {
	for _, tc := range []struct {
		name     string
		statuses []int // answers in order; the last repeats
		put      bool
		tries    int
		ok       bool
	}{
		{"get after a 503", []int{503, 200}, false, 2, true},
		{"put after a 500 and a 429", []int{500, 429, 200}, true, 3, true},
		{"put always 502", []int{502}, true, 3, false},
		{"get 403 not retried", []int{403}, false, 1, false},
		{"get 404 not retried", []int{404}, false, 1, false},
		{"put 408 then ok", []int{408, 201}, true, 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tries int
			var bodies []string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				bodies = append(bodies, string(b))
				w.WriteHeader(tc.statuses[min(tries, len(tc.statuses)-1)])
				tries++
			}))
			defer srv.Close()
			h := NewHTTP(time.Minute, nil)
			h.Retries = []time.Duration{0, 0}
			var err error
			if tc.put {
				err = h.Put(context.Background(), srv.URL+"/b/k", strings.NewReader("archive"))
				for _, b := range bodies {
					if b != "archive" {
						t.Errorf("a try sent %q, want the whole archive", b)
					}
				}
			} else {
				var rc io.ReadCloser
				if rc, err = h.Get(context.Background(), srv.URL+"/b/k"); err == nil {
					rc.Close()
				}
			}
			if tries != tc.tries || (err == nil) != tc.ok {
				t.Errorf("%d tries, err %v; want %d tries, success %v", tries, err, tc.tries, tc.ok)
			}
		})
	}
}
