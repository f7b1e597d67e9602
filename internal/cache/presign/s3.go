package presign

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/podrunner/podrunner/internal/config"
)

// S3Config is how to reach an S3-compatible store.
type S3Config struct {
	config.CacheS3
	// Transport for the requests the signer itself makes (credentials of
	// the environment, the bucket's region); minio's default when nil.
	Transport http.RoundTripper
}

// S3 signs SigV4 pre-signed GET and PUT URLs of a bucket's objects. A
// pre-signed PUT is one request, so an archive is limited to S3's 5 GiB
// of a single PUT (GitLab Runner's limit too).
type S3 struct {
	client *minio.Client
	bucket string
	iam    bool
}

// NewS3 checks the settings and builds the client (no request is made).
func NewS3(c S3Config) (*S3, error) {
	if c.BucketName == "" {
		return nil, errors.New("[runners.cache.s3] BucketName is not set")
	}
	switch strings.ToLower(c.AuthenticationType) {
	case "access-key", "", "iam":
	default:
		return nil, fmt.Errorf("[runners.cache.s3] AuthenticationType %q is unknown: use \"access-key\" or \"iam\"", c.AuthenticationType)
	}
	iam := IAM(c.CacheS3)
	if !iam && (c.AccessKey == "" || c.SecretKey == "") {
		return nil, errors.New("[runners.cache.s3] AccessKey and SecretKey must both be set")
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
	tr := c.Transport
	if tr == nil {
		t, err := minio.DefaultTransport(secure)
		if err != nil {
			return nil, fmt.Errorf("s3 transport: %w", err)
		}
		tr = t
	}
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
	return &S3{client: client, bucket: c.BucketName, iam: iam}, nil
}

// s3Credentials are the static keys, or for IAM the AWS chain of the
// runner's environment: AWS_ACCESS_KEY_ID/…, the shared credentials file,
// then (credentials.IAM) a web identity token file (IRSA:
// AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN, exchanged at STS), ECS or
// EC2 instance metadata. AWS_ENDPOINT_URL_STS (the AWS SDKs' variable)
// points the web identity exchange at another STS endpoint.
func s3Credentials(c config.CacheS3, tr http.RoundTripper) *credentials.Credentials {
	if !IAM(c) {
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

// GetURL signs a GET of object. Without BucketLocation the client asks the
// bucket's region once (and remembers it).
func (s *S3) GetURL(ctx context.Context, object string, ttl time.Duration) (string, error) {
	u, err := s.client.PresignedGetObject(ctx, s.bucket, object, clampTTL(ttl), url.Values{})
	if err != nil {
		return "", s.wrap(object, err)
	}
	return u.String(), nil
}

// PutURL signs a PUT of object; no header is signed.
func (s *S3) PutURL(ctx context.Context, object string, ttl time.Duration) (string, http.Header, error) {
	u, err := s.client.PresignedPutObject(ctx, s.bucket, object, clampTTL(ttl))
	if err != nil {
		return "", nil, s.wrap(object, err)
	}
	return u.String(), nil, nil
}

func (s *S3) wrap(object string, err error) error {
	where := "s3://" + s.bucket + "/" + object
	if s.iam {
		return fmt.Errorf("sign %s: %w: check the AWS credentials of the runner's environment ([runners.cache.s3] AuthenticationType = \"iam\": "+
			"AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN (IRSA), or the instance role)", where, err)
	}
	return fmt.Errorf("sign %s: %w", where, err)
}
