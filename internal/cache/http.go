package cache

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// HTTP is a Store whose names are pre-signed URLs (GitLab Runner's cache
// helper protocol): Get is a plain GET, Put a plain PUT of the whole
// archive with its Content-Length. The URL is the credential, so it is
// never printed: Describe and every error show it without its query.
type HTTP struct {
	// Client makes the requests; http.DefaultClient when nil.
	Client *http.Client
	// Header is sent with every PUT (what the signer asked for, e.g.
	// Azure's x-ms-blob-type).
	Header http.Header
	// Retries are the waits before the second, third … try of a request
	// that failed on the way or with a 408, 429 or 5xx (the store's
	// hiccups; the SDKs retried them too). defaultRetries when nil.
	Retries []time.Duration
}

var defaultRetries = []time.Duration{time.Second, 3 * time.Second}

// NewHTTP is an HTTP store whose requests give up when the store has not
// answered (response headers) within timeout; no limit when 0.
func NewHTTP(timeout time.Duration, header http.Header) HTTP {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = timeout
	return HTTP{Client: &http.Client{Transport: tr}, Header: header}
}

func (h HTTP) client() *http.Client {
	if h.Client != nil {
		return h.Client
	}
	return http.DefaultClient
}

// Describe returns the URL without its query (the signature).
func (h HTTP) Describe(rawURL string) string { return redactURL(rawURL) }

// do sends the request made by newReq, again after each of h.Retries
// while it fails on the way or with a status worth another try.
func (h HTTP) do(ctx context.Context, newReq func() (*http.Request, error)) (*http.Response, error) {
	waits := h.Retries
	if waits == nil {
		waits = defaultRetries
	}
	for try := 0; ; try++ {
		req, err := newReq()
		if err != nil {
			return nil, err
		}
		resp, err := h.client().Do(req)
		retry := err != nil || resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500
		if !retry || try >= len(waits) || ctx.Err() != nil {
			return resp, err
		}
		if resp != nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(waits[try]):
		}
	}
}

// Get starts the download; ErrNotFound on a 404 that is not about a
// missing bucket or container.
func (h HTTP) Get(ctx context.Context, rawURL string) (io.ReadCloser, error) {
	resp, err := h.do(ctx, func() (*http.Request, error) {
		return http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	})
	if err != nil {
		return nil, fmt.Errorf("download %s: %w", redactURL(rawURL), redactErr(err))
	}
	if resp.StatusCode == http.StatusOK {
		return resp.Body, nil
	}
	defer resp.Body.Close()
	return nil, statusError("download", rawURL, resp)
}

// Put stores r: it is written to a temporary file first (in $TMPDIR,
// removed afterwards), because a pre-signed PUT needs the length up front;
// the file is then streamed as the request body. Nothing is held in
// memory.
func (h HTTP) Put(ctx context.Context, rawURL string, r io.Reader) error {
	tmp, err := os.CreateTemp("", "podrunner-cache-*.zip")
	if err != nil {
		return fmt.Errorf("upload %s: temporary file: %w", redactURL(rawURL), err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	n, err := io.Copy(tmp, ctxReader{ctx, r})
	if err != nil {
		return err
	}
	resp, err := h.do(ctx, func() (*http.Request, error) {
		// Each try sends the file from its start; the section reader
		// keeps the client from closing the file (the deferred Close
		// does).
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, rawURL, io.NopCloser(io.NewSectionReader(tmp, 0, n)))
		if err != nil {
			return nil, err
		}
		req.ContentLength = n
		if n == 0 {
			req.Body = http.NoBody
		}
		for k, vs := range h.Header {
			for _, v := range vs {
				req.Header.Add(k, v)
			}
		}
		return req, nil
	})
	if err != nil {
		return fmt.Errorf("upload %s: %w", redactURL(rawURL), redactErr(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil
	}
	return statusError("upload", rawURL, resp)
}

// storeKind names the store a pre-signed URL is for, from the parameters
// of its signature, and the config.toml section that configures it.
func storeKind(rawURL string) (name, section string) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "the cache store", "[runners.cache]"
	}
	q := u.Query()
	switch {
	case q.Has("X-Amz-Signature") || q.Has("AWSAccessKeyId"):
		return "S3", "[runners.cache.s3]"
	case q.Has("sig") && q.Has("sv"):
		return "Azure Blob Storage", "[runners.cache.azure]"
	case q.Has("X-Goog-Signature") || q.Has("GoogleAccessId"):
		return "Google Cloud Storage", "[runners.cache.gcs]"
	}
	return "the cache store", "[runners.cache]"
}

// storeError is the XML error document S3, GCS's XML API and Azure send.
type storeError struct {
	Code    string `xml:"Code"`
	Message string `xml:"Message"`
}

// statusError turns a refused request into a message that names the store
// and what to check; a 404 of a download that is not about the bucket is
// ErrNotFound.
func statusError(op, rawURL string, resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var se storeError
	_ = xml.Unmarshal(bytes.TrimSpace(body), &se)
	name, section := storeKind(rawURL)
	where := redactURL(rawURL)
	detail := resp.Status
	if se.Code != "" {
		detail += " (" + se.Code
		if msg, _, _ := strings.Cut(strings.TrimSpace(se.Message), "\n"); msg != "" {
			detail += ": " + msg
		}
		detail += ")"
	}
	switch {
	case se.Code == "NoSuchBucket" || se.Code == "ContainerNotFound":
		return fmt.Errorf("%s %s: %s: the bucket or container does not exist on %s: create it or fix %s", op, where, detail, name, section)
	case resp.StatusCode == http.StatusNotFound && op == "download":
		return ErrNotFound
	case resp.StatusCode == http.StatusNotFound:
		return fmt.Errorf("%s %s: %s: %s has no such bucket or container: create it or fix %s", op, where, detail, name, section)
	case resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusUnauthorized:
		return fmt.Errorf("%s %s: %s: %s refused the runner's pre-signed URL: check the credentials in %s of the runner's config.toml (or its environment's) and that they may use the bucket or container", op, where, detail, name, section)
	}
	return fmt.Errorf("%s %s: %s from %s", op, where, detail, name)
}

// redactURL drops the query (the signature) and any user info.
func redactURL(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(an unparsable URL)"
	}
	u.RawQuery, u.ForceQuery, u.User, u.Fragment = "", false, nil, ""
	return u.String()
}

// redactErr removes the URL net/http puts into its errors.
func redactErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
