package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/podrunner/podrunner/internal/job"
)

// DefaultPartSize is the multipart part size of uploads: the upload holds
// one part in memory, and S3's 10,000 parts limit caps an archive at about
// 78 GiB (GitLab Runner's presigned single PUT stops at 5 GB).
const DefaultPartSize = 8 << 20

// S3Config is how to reach an S3-compatible store.
type S3Config struct {
	job.CacheS3
	// PartSize of multipart uploads; DefaultPartSize when 0 (at least
	// 5 MiB, S3's minimum).
	PartSize int64
	// RequestTimeout bounds the wait for a response's headers (not the
	// transfer); none when 0.
	RequestTimeout time.Duration
}

// S3 is a Store in an S3 bucket. Uploads are streamed as multipart
// uploads of PartSize parts, downloads read the object's body as it comes.
type S3 struct {
	client   *minio.Client
	bucket   string
	endpoint string
	partSize int64
	iam      bool // credentials from the environment
}

// NewS3 checks the settings and builds the client (no request is made).
func NewS3(c S3Config) (*S3, error) {
	store := &job.CacheStore{Type: "s3", S3: &c.CacheS3}
	if err := store.Validate(); err != nil {
		return nil, err
	}
	endpoint, secure := c.ServerAddress, !c.Insecure
	switch {
	case strings.HasPrefix(endpoint, "http://"):
		endpoint, secure = strings.TrimPrefix(endpoint, "http://"), false
	case strings.HasPrefix(endpoint, "https://"):
		endpoint, secure = strings.TrimPrefix(endpoint, "https://"), true
	}
	endpoint = strings.TrimSuffix(endpoint, "/")
	if endpoint == "" {
		endpoint = "s3.amazonaws.com"
	}
	if strings.Contains(endpoint, "/") {
		return nil, fmt.Errorf("[runners.cache.s3] ServerAddress %q must be host[:port], without a path", c.ServerAddress)
	}
	tr, err := minio.DefaultTransport(secure)
	if err != nil {
		return nil, fmt.Errorf("s3 transport: %w", err)
	}
	tr.ResponseHeaderTimeout = c.RequestTimeout
	lookup := minio.BucketLookupAuto
	if c.PathStyle != nil {
		lookup = minio.BucketLookupDNS
		if *c.PathStyle {
			lookup = minio.BucketLookupPath
		}
	}
	client, err := minio.New(endpoint, &minio.Options{
		Creds:        s3Credentials(c.CacheS3, tr),
		Secure:       secure,
		Transport:    tr,
		Region:       c.BucketLocation,
		BucketLookup: lookup,
		MaxRetries:   3,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 client for %s: %w", endpoint, err)
	}
	part := c.PartSize
	if part == 0 {
		part = DefaultPartSize
	}
	if part < 5<<20 {
		return nil, fmt.Errorf("s3 part size %d is below S3's minimum of 5 MiB", part)
	}
	scheme := "https"
	if !secure {
		scheme = "http"
	}
	return &S3{client: client, bucket: c.BucketName, endpoint: scheme + "://" + endpoint, partSize: part, iam: c.IAM()}, nil
}

// s3Credentials are the static keys, or for IAM the AWS chain of the
// environment: AWS_ACCESS_KEY_ID/…, the shared credentials file, then
// (credentials.IAM) a web identity token file (IRSA: AWS_WEB_IDENTITY_TOKEN_FILE
// and AWS_ROLE_ARN, exchanged at STS), ECS or EC2 instance metadata.
// AWS_ENDPOINT_URL_STS (the AWS SDKs' variable) points the web identity
// exchange at another STS endpoint.
func s3Credentials(c job.CacheS3, tr http.RoundTripper) *credentials.Credentials {
	if !c.IAM() {
		return credentials.NewStaticV4(c.AccessKey, c.SecretKey, c.SessionToken)
	}
	iam := &credentials.IAM{Client: &http.Client{Transport: tr}}
	if os.Getenv("AWS_WEB_IDENTITY_TOKEN_FILE") != "" {
		iam.Endpoint = os.Getenv("AWS_ENDPOINT_URL_STS")
	}
	return credentials.NewChainCredentials([]credentials.Provider{
		&credentials.EnvAWS{},
		&credentials.FileAWSCredentials{},
		iam,
	})
}

func (s *S3) credentialsHint() string {
	if s.iam {
		return "check the AWS credentials of the environment ([runners.cache.s3] AuthenticationType = \"iam\": " +
			"AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN (IRSA), or the instance role) " +
			"and that they may use the bucket"
	}
	return "check [runners.cache.s3] AccessKey and SecretKey"
}

// Describe returns s3://bucket/name.
func (s *S3) Describe(name string) string { return "s3://" + s.bucket + "/" + name }

// Get starts the download of name; the returned body streams.
func (s *S3) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	obj, err := s.client.GetObject(ctx, s.bucket, name, minio.GetObjectOptions{})
	if err != nil {
		return nil, s.wrap("download", name, err)
	}
	// Stat sends the request: a missing object or bucket shows here,
	// before anything is extracted.
	if _, err := obj.Stat(); err != nil {
		obj.Close()
		err = s.wrap("download", name, err)
		// Stat is a HEAD request: a 404 has no body to tell a missing
		// bucket from a missing object.
		if errors.Is(err, ErrNotFound) {
			if ok, berr := s.client.BucketExists(ctx, s.bucket); berr == nil && !ok {
				return nil, s.noBucket("download", name)
			}
		}
		return nil, err
	}
	return obj, nil
}

// Put streams r as a multipart upload; a failed upload is aborted, so no
// partial object is ever visible.
func (s *S3) Put(ctx context.Context, name string, r io.Reader) error {
	_, err := s.client.PutObject(ctx, s.bucket, name, r, -1, minio.PutObjectOptions{
		PartSize:    uint64(s.partSize),
		ContentType: "application/zip",
	})
	if err != nil {
		return s.wrap("upload", name, err)
	}
	return nil
}

func (s *S3) noBucket(op, name string) error {
	return fmt.Errorf("%s %s: bucket %q does not exist on %s: create it or fix [runners.cache.s3] BucketName", op, s.Describe(name), s.bucket, s.endpoint)
}

// wrap turns S3 error codes into messages that say what to do.
func (s *S3) wrap(op, name string, err error) error {
	resp := minio.ToErrorResponse(err)
	switch {
	case resp.Code == "NoSuchBucket":
		return s.noBucket(op, name)
	case resp.Code == "NoSuchKey" || (op == "download" && resp.StatusCode == http.StatusNotFound):
		return ErrNotFound
	case resp.Code == "AccessDenied" || resp.Code == "InvalidAccessKeyId" || resp.Code == "SignatureDoesNotMatch":
		return fmt.Errorf("%s %s: %s: %s", op, s.Describe(name), resp.Message, s.credentialsHint())
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s %s: %w", op, s.Describe(name), err)
	}
	return fmt.Errorf("%s %s on %s: %w", op, s.Describe(name), s.endpoint, err)
}
