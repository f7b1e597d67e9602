package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"cloud.google.com/go/storage"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"

	"github.com/podrunner/podrunner/internal/job"
)

// GCSChunkSize is the size of the chunks of a resumable upload: the memory
// an upload holds (GitLab Runner's presigned single PUT holds none, but
// cannot resume).
const GCSChunkSize = 8 << 20

// GCSConfig is how to reach a GCS bucket. Credentials is the JSON of a
// service account key (CredentialsFile's content), or AccessID and
// PrivateKey make one; with neither, the environment's default credentials
// are used (GOOGLE_APPLICATION_CREDENTIALS, workload identity, metadata).
type GCSConfig struct {
	BucketName  string
	Credentials []byte
	AccessID    string
	PrivateKey  string
	// Options are added to the client's (tests: an emulator's endpoint).
	Options []option.ClientOption
}

// GCS is a Store in a Google Cloud Storage bucket. Uploads are resumable
// uploads of GCSChunkSize chunks, finalized only when the archive ended;
// downloads stream the object's body.
type GCS struct {
	client *storage.Client
	bucket string
	source string // of the credentials, for messages
}

// NewGCS builds the client; with the default credentials this looks them
// up (no request to the bucket is made).
func NewGCS(ctx context.Context, c GCSConfig) (*GCS, error) {
	g := job.CacheGCS{BucketName: c.BucketName, AccessID: c.AccessID, PrivateKey: c.PrivateKey}
	if err := (&job.CacheStore{Type: "gcs", GCS: &g}).Validate(); err != nil {
		return nil, err
	}
	// JSON reads: the XML API's host is not the endpoint's (emulators
	// serve the JSON API only); for GCS both are the same data.
	opts := append([]option.ClientOption{storage.WithJSONReads()}, c.Options...)
	source := "the default credentials of the environment (GOOGLE_APPLICATION_CREDENTIALS, workload identity or the metadata server)"
	creds := c.Credentials
	switch {
	case len(creds) > 0:
		source = "[runners.cache.gcs] CredentialsFile"
	case c.AccessID != "":
		source = "[runners.cache.gcs] AccessID and PrivateKey"
		var err error
		creds, err = json.Marshal(map[string]string{
			"type": "service_account", "client_email": c.AccessID, "private_key": c.PrivateKey,
			"token_uri": "https://oauth2.googleapis.com/token",
		})
		if err != nil {
			return nil, err
		}
	}
	if len(creds) > 0 {
		var probe struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(creds, &probe); err != nil {
			return nil, fmt.Errorf("gcs credentials from %s are not JSON: %w", source, err)
		}
		// The type is checked: the library warns against loading
		// credential configurations of any type unseen.
		types := map[string]option.CredentialsType{
			"service_account": option.ServiceAccount, "authorized_user": option.AuthorizedUser,
			"impersonated_service_account": option.ImpersonatedServiceAccount, "external_account": option.ExternalAccount,
		}
		ct, ok := types[probe.Type]
		if !ok {
			return nil, fmt.Errorf("gcs credentials from %s: type %q is not a service account key (\"service_account\"), an authorized user, an impersonated service account or an external account", source, probe.Type)
		}
		opts = append(opts, option.WithAuthCredentialsJSON(ct, creds))
	}
	client, err := storage.NewClient(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("gcs client with %s: %w", source, err)
	}
	return &GCS{client: client, bucket: c.BucketName, source: source}, nil
}

// Close releases the client's connections.
func (g *GCS) Close() error { return g.client.Close() }

// Describe returns gs://bucket/name.
func (g *GCS) Describe(name string) string { return "gs://" + g.bucket + "/" + name }

// Get starts the download of name; the returned body streams.
func (g *GCS) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	r, err := g.client.Bucket(g.bucket).Object(name).NewReader(ctx)
	if err != nil {
		return nil, g.wrap(ctx, "download", name, err)
	}
	return r, nil
}

// Put streams r as a resumable upload; on any error the upload is
// cancelled before it is finalized, so no partial object is ever visible.
func (g *GCS) Put(ctx context.Context, name string, r io.Reader) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := g.client.Bucket(g.bucket).Object(name).NewWriter(ctx)
	w.ChunkSize = GCSChunkSize
	w.ContentType = "application/zip"
	if _, err := io.Copy(w, r); err != nil {
		cancel()
		_ = w.Close()
		return g.wrap(ctx, "upload", name, err)
	}
	if err := w.Close(); err != nil {
		return g.wrap(ctx, "upload", name, err)
	}
	return nil
}

// wrap turns GCS errors into messages that say what to do.
func (g *GCS) wrap(ctx context.Context, op, name string, err error) error {
	var gerr *googleapi.Error
	switch {
	case errors.Is(err, storage.ErrBucketNotExist):
		return g.noBucket(op, name)
	case op == "download" && (errors.Is(err, storage.ErrObjectNotExist) || errors.As(err, &gerr) && gerr.Code == http.StatusNotFound):
		// A 404 of a download does not tell a missing bucket from a
		// missing object.
		if _, berr := g.client.Bucket(g.bucket).Attrs(ctx); errors.Is(berr, storage.ErrBucketNotExist) {
			return g.noBucket(op, name)
		}
		return ErrNotFound
	case errors.As(err, &gerr) && gerr.Code == http.StatusNotFound:
		return g.noBucket(op, name)
	case errors.As(err, &gerr) && (gerr.Code == http.StatusUnauthorized || gerr.Code == http.StatusForbidden):
		return fmt.Errorf("%s %s: access denied (%d): check %s and that it may read and write objects of the bucket", op, g.Describe(name), gerr.Code, g.source)
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s %s: %w", op, g.Describe(name), err)
	}
	return fmt.Errorf("%s %s (credentials: %s): %w", op, g.Describe(name), g.source, err)
}

func (g *GCS) noBucket(op, name string) error {
	return fmt.Errorf("%s %s: bucket %q does not exist: create it or fix [runners.cache.gcs] BucketName", op, g.Describe(name), g.bucket)
}
