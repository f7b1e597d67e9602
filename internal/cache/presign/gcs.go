package presign

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"cloud.google.com/go/storage"
	"google.golang.org/api/option"

	"github.com/podrunner/podrunner/internal/config"
)

// GCSConfig is how to reach a GCS bucket: a service account key
// (CredentialsFile, or AccessID with PrivateKey), else the default
// credentials of the runner's environment.
type GCSConfig struct {
	config.CacheGCS
	// Endpoint (scheme://host[:port]) replaces storage.googleapis.com in
	// the URLs: an emulator (also STORAGE_EMULATOR_HOST, the client
	// library's variable).
	Endpoint string
}

// GCS signs V4 signed URLs of a bucket's objects: with the service
// account's private key, or with default credentials through the client
// library (which signs with the key of a service account key file, or
// asks IAM's signBlob for the metadata server's service account).
type GCS struct {
	bucket string
	source string // of the credentials, for messages
	// With a private key: the key and its service account; else client.
	accessID string
	key      []byte
	client   *storage.Client
	hostname string
	insecure bool
}

// NewGCS reads the credentials; with the default credentials it builds
// the client (which looks them up).
func NewGCS(ctx context.Context, c GCSConfig) (*GCS, error) {
	if c.BucketName == "" {
		return nil, errors.New("[runners.cache.gcs] BucketName is not set")
	}
	if (c.AccessID == "") != (c.PrivateKey == "") {
		return nil, errors.New("[runners.cache.gcs] AccessID and PrivateKey must be set together")
	}
	g := &GCS{bucket: c.BucketName}
	endpoint := c.Endpoint
	if endpoint == "" && os.Getenv("STORAGE_EMULATOR_HOST") != "" {
		endpoint = os.Getenv("STORAGE_EMULATOR_HOST")
		if !strings.Contains(endpoint, "://") {
			endpoint = "http://" + endpoint
		}
	}
	if endpoint != "" {
		u, err := url.Parse(endpoint)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("gcs endpoint %q is not a URL", endpoint)
		}
		g.hostname, g.insecure = u.Host, u.Scheme == "http"
	}
	switch {
	case c.AccessID != "":
		g.source, g.accessID, g.key = "[runners.cache.gcs] AccessID and PrivateKey", c.AccessID, []byte(c.PrivateKey)
		return g, nil
	case c.CredentialsFile != "":
		g.source = "[runners.cache.gcs] CredentialsFile " + c.CredentialsFile
		b, err := os.ReadFile(c.CredentialsFile)
		if err != nil {
			return nil, fmt.Errorf("[runners.cache.gcs] CredentialsFile: %w", err)
		}
		var key struct {
			Type        string `json:"type"`
			ClientEmail string `json:"client_email"`
			PrivateKey  string `json:"private_key"`
		}
		if err := json.Unmarshal(b, &key); err != nil {
			return nil, fmt.Errorf("%s is not JSON: %w", g.source, err)
		}
		if key.Type != "service_account" || key.ClientEmail == "" || key.PrivateKey == "" {
			return nil, fmt.Errorf("%s: type %q is not a service account key (\"service_account\" with client_email and private_key), which signing URLs needs", g.source, key.Type)
		}
		g.accessID, g.key = key.ClientEmail, []byte(key.PrivateKey)
		return g, nil
	}
	g.source = "the default credentials of the runner's environment (GOOGLE_APPLICATION_CREDENTIALS, workload identity or the metadata server)"
	client, err := storage.NewClient(ctx, option.WithScopes(storage.ScopeReadWrite))
	if err != nil {
		return nil, fmt.Errorf("gcs client with %s: %w", g.source, err)
	}
	g.client = client
	return g, nil
}

// GetURL signs a GET of object.
func (g *GCS) GetURL(_ context.Context, object string, ttl time.Duration) (string, error) {
	return g.sign(http.MethodGet, object, ttl)
}

// PutURL signs a PUT of object (a single request, up to 5 TiB).
func (g *GCS) PutURL(_ context.Context, object string, ttl time.Duration) (string, http.Header, error) {
	u, err := g.sign(http.MethodPut, object, ttl)
	return u, nil, err
}

// sign takes no context: the library's signing has none (with default
// credentials it may call IAM's signBlob, bounded by the client's own
// timeouts).
func (g *GCS) sign(method, object string, ttl time.Duration) (string, error) {
	opts := &storage.SignedURLOptions{
		Method:   method,
		Expires:  time.Now().Add(clampTTL(ttl)),
		Scheme:   storage.SigningSchemeV4,
		Hostname: g.hostname,
		Insecure: g.insecure,
	}
	var (
		u   string
		err error
	)
	if g.client != nil {
		u, err = g.client.Bucket(g.bucket).SignedURL(object, opts)
	} else {
		opts.GoogleAccessID, opts.PrivateKey = g.accessID, g.key
		u, err = storage.SignedURL(g.bucket, object, opts)
	}
	if err != nil {
		return "", fmt.Errorf("sign gs://%s/%s with %s: %w", g.bucket, object, g.source, err)
	}
	return u, nil
}
