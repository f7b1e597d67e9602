package presign

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"cloud.google.com/go/compute/metadata"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"

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

// GCS makes V4 signed URLs of a bucket's objects as GCS documents them
// ("V4 signing process with your own program"), the same the client
// library makes (TestGCSSignsAsTheClientLibrary): signed with the service
// account's private key, or by IAM's signBlob for the service account of
// the default credentials. The signing is done here rather than with
// cloud.google.com/go/storage, whose packages alone take about 20 MiB of
// every manager's resident memory.
type GCS struct {
	bucket   string
	source   string // of the credentials, for messages
	accessID string
	sign     func(ctx context.Context, blob []byte) ([]byte, error)
	scheme   string
	host     string
	now      func() time.Time
}

const gcsHost = "storage.googleapis.com"

// NewGCS reads the credentials; with the default credentials it finds
// them and the service account's email.
func NewGCS(ctx context.Context, c GCSConfig) (*GCS, error) {
	if c.BucketName == "" {
		return nil, errors.New("[runners.cache.gcs] BucketName is not set")
	}
	if (c.AccessID == "") != (c.PrivateKey == "") {
		return nil, errors.New("[runners.cache.gcs] AccessID and PrivateKey must be set together")
	}
	g := &GCS{bucket: c.BucketName, scheme: "https", host: gcsHost, now: time.Now}
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
		g.host, g.scheme = u.Host, u.Scheme
	}
	switch {
	case c.AccessID != "":
		g.source = "[runners.cache.gcs] AccessID and PrivateKey"
		return g, g.withKey(c.AccessID, []byte(c.PrivateKey))
	case c.CredentialsFile != "":
		g.source = "[runners.cache.gcs] CredentialsFile " + c.CredentialsFile
		b, err := os.ReadFile(c.CredentialsFile)
		if err != nil {
			return nil, fmt.Errorf("[runners.cache.gcs] CredentialsFile: %w", err)
		}
		email, key, err := serviceAccountKey(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", g.source, err)
		}
		return g, g.withKey(email, key)
	}
	g.source = "the default credentials of the runner's environment (GOOGLE_APPLICATION_CREDENTIALS, workload identity or the metadata server)"
	creds, err := google.FindDefaultCredentials(ctx, "https://www.googleapis.com/auth/cloud-platform")
	if err != nil {
		return nil, fmt.Errorf("gcs: %s: %w", g.source, err)
	}
	if email, key, err := serviceAccountKey(creds.JSON); err == nil {
		return g, g.withKey(email, key)
	}
	email, err := metadata.EmailWithContext(ctx, "default")
	if err != nil {
		return nil, fmt.Errorf("gcs: %s: no service account key and no service account from the metadata server (%w): set CredentialsFile or AccessID and PrivateKey", g.source, err)
	}
	g.accessID = email
	g.sign = signBlob(oauth2.NewClient(ctx, creds.TokenSource), email)
	return g, nil
}

// serviceAccountKey reads a service account key file's email and key.
func serviceAccountKey(b []byte) (string, []byte, error) {
	var key struct {
		Type        string `json:"type"`
		ClientEmail string `json:"client_email"`
		PrivateKey  string `json:"private_key"`
	}
	if err := json.Unmarshal(b, &key); err != nil {
		return "", nil, fmt.Errorf("not JSON: %w", err)
	}
	if key.Type != "service_account" || key.ClientEmail == "" || key.PrivateKey == "" {
		return "", nil, fmt.Errorf("type %q is not a service account key (\"service_account\" with client_email and private_key), which signing URLs needs", key.Type)
	}
	return key.ClientEmail, []byte(key.PrivateKey), nil
}

// withKey signs with an RSA private key (PEM, PKCS #8 or #1).
func (g *GCS) withKey(email string, pemKey []byte) error {
	block, _ := pem.Decode(pemKey)
	if block == nil {
		return fmt.Errorf("%s: the private key is not PEM", g.source)
	}
	var key *rsa.PrivateKey
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return fmt.Errorf("%s: the private key is a %T, want RSA", g.source, k)
		}
		key = rk
	} else if k, err2 := x509.ParsePKCS1PrivateKey(block.Bytes); err2 == nil {
		key = k
	} else {
		return fmt.Errorf("%s: the private key cannot be read: %w", g.source, err)
	}
	g.accessID = email
	g.sign = func(_ context.Context, blob []byte) ([]byte, error) {
		sum := sha256.Sum256(blob)
		return rsa.SignPKCS1v15(nil, key, crypto.SHA256, sum[:])
	}
	return nil
}

// signBlob signs with IAM's signBlob for the service account email.
func signBlob(hc *http.Client, email string) func(ctx context.Context, blob []byte) ([]byte, error) {
	return func(ctx context.Context, blob []byte) ([]byte, error) {
		body, _ := json.Marshal(map[string]string{"payload": base64.StdEncoding.EncodeToString(blob)})
		u := "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/" + url.PathEscape(email) + ":signBlob"
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			return nil, fmt.Errorf("IAM signBlob for %s: %w", email, err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("IAM signBlob for %s: %s: %s (the service account needs roles/iam.serviceAccountTokenCreator on itself)", email, resp.Status, bytes.TrimSpace(data))
		}
		var out struct {
			SignedBlob string `json:"signedBlob"`
		}
		if err := json.Unmarshal(data, &out); err != nil {
			return nil, fmt.Errorf("IAM signBlob for %s: %w", email, err)
		}
		return base64.StdEncoding.DecodeString(out.SignedBlob)
	}
}

// GetURL signs a GET of object.
func (g *GCS) GetURL(ctx context.Context, object string, ttl time.Duration) (string, error) {
	return g.signedURL(ctx, http.MethodGet, object, ttl)
}

// PutURL signs a PUT of object (a single request, up to 5 TiB).
func (g *GCS) PutURL(ctx context.Context, object string, ttl time.Duration) (string, http.Header, error) {
	u, err := g.signedURL(ctx, http.MethodPut, object, ttl)
	return u, nil, err
}

func (g *GCS) signedURL(ctx context.Context, method, object string, ttl time.Duration) (string, error) {
	now := g.now().UTC()
	stamp := now.Format("20060102T150405Z")
	scope := now.Format("20060102") + "/auto/storage/goog4_request"
	segs := strings.Split(object, "/")
	for i, s := range segs {
		// RFC 3986 unreserved kept, the rest percent-encoded ("+" too).
		segs[i] = strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
	}
	path := "/" + g.bucket + "/" + strings.Join(segs, "/")
	q := url.Values{
		"X-Goog-Algorithm":     {"GOOG4-RSA-SHA256"},
		"X-Goog-Credential":    {g.accessID + "/" + scope},
		"X-Goog-Date":          {stamp},
		"X-Goog-Expires":       {strconv.Itoa(int(clampTTL(ttl) / time.Second))},
		"X-Goog-SignedHeaders": {"host"},
	}
	// Encode sorts by key; no value has a space, whose encoding differs.
	query := q.Encode()
	// The host without its port, as the client library signs it.
	host := g.host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	canonical := method + "\n" + path + "\n" + query + "\nhost:" + host + "\n\nhost\nUNSIGNED-PAYLOAD"
	sum := sha256.Sum256([]byte(canonical))
	toSign := "GOOG4-RSA-SHA256\n" + stamp + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
	sig, err := g.sign(ctx, []byte(toSign))
	if err != nil {
		return "", fmt.Errorf("sign gs://%s/%s with %s: %w", g.bucket, object, g.source, err)
	}
	q.Set("X-Goog-Signature", hex.EncodeToString(sig))
	return g.scheme + "://" + g.host + path + "?" + q.Encode(), nil
}
