package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/podrunner/podrunner/internal/job"
)

// DefaultAzureStorageDomain is [runners.cache.azure] StorageDomain's
// default, Azure's public cloud (GitLab Runner's).
const DefaultAzureStorageDomain = "blob.core.windows.net"

// Azure uploads stage blocks of AzureBlockSize, AzureConcurrency at a
// time: that is the memory an upload holds (8 MiB, as the S3 store's part),
// and Azure's 50,000 blocks cap an archive at about 195 GiB.
const (
	AzureBlockSize   = 4 << 20
	AzureConcurrency = 2
)

// AzureConfig is how to reach a container of Azure Blob Storage.
type AzureConfig struct {
	job.CacheAzure
	// RequestTimeout bounds each try of a request; none when 0.
	RequestTimeout time.Duration
}

// Azure is a Store in an Azure Blob Storage container. Uploads stage
// blocks and commit the block list at the end, so a failed upload never
// replaces the stored blob; downloads stream the blob's body.
type Azure struct {
	container *container.Client
	url       string // of the container, for messages
	key       bool   // shared key (else the environment's Azure credentials)
}

// NewAzure checks the settings and builds the client (no request is made).
// Without AccountKey, the credentials are the environment's (azidentity's
// default chain: AZURE_* service principal variables, workload identity's
// AZURE_FEDERATED_TOKEN_FILE with AZURE_CLIENT_ID and AZURE_TENANT_ID,
// then managed identity), as GitLab Runner does without a key.
func NewAzure(c AzureConfig) (*Azure, error) {
	store := &job.CacheStore{Type: "azure", Azure: &c.CacheAzure}
	if err := store.Validate(); err != nil {
		return nil, err
	}
	u, err := azureContainerURL(c.CacheAzure)
	if err != nil {
		return nil, err
	}
	opts := &container.ClientOptions{ClientOptions: policy.ClientOptions{
		Retry: policy.RetryOptions{MaxRetries: 3, TryTimeout: c.RequestTimeout},
	}}
	a := &Azure{url: u}
	if c.AccountKey != "" {
		cred, err := container.NewSharedKeyCredential(c.AccountName, c.AccountKey)
		if err != nil {
			return nil, fmt.Errorf("[runners.cache.azure] AccountKey: %w", err)
		}
		a.container, err = container.NewClientWithSharedKeyCredential(u, cred, opts)
		if err != nil {
			return nil, fmt.Errorf("azure client for %s: %w", u, err)
		}
		a.key = true
		return a, nil
	}
	cred, err := azidentity.NewDefaultAzureCredential(nil)
	if err != nil {
		return nil, fmt.Errorf("azure credentials of the environment ([runners.cache.azure] has no AccountKey): %w", err)
	}
	a.container, err = container.NewClient(u, cred, opts)
	if err != nil {
		return nil, fmt.Errorf("azure client for %s: %w", u, err)
	}
	return a, nil
}

// azureContainerURL is https://<account>.<domain>/<container>, or with a
// StorageDomain that has a scheme (an emulator such as Azurite),
// <domain>/<account>/<container>.
func azureContainerURL(c job.CacheAzure) (string, error) {
	d := c.StorageDomain
	if d == "" {
		d = DefaultAzureStorageDomain
	}
	if strings.HasPrefix(d, "http://") || strings.HasPrefix(d, "https://") {
		u, err := url.Parse(strings.TrimSuffix(d, "/"))
		if err != nil || u.Host == "" {
			return "", fmt.Errorf("[runners.cache.azure] StorageDomain %q is not a URL", c.StorageDomain)
		}
		return u.String() + "/" + url.PathEscape(c.AccountName) + "/" + url.PathEscape(c.ContainerName), nil
	}
	if strings.ContainsAny(d, "/?#") {
		return "", fmt.Errorf("[runners.cache.azure] StorageDomain %q must be a domain such as %s", c.StorageDomain, DefaultAzureStorageDomain)
	}
	return "https://" + c.AccountName + "." + d + "/" + url.PathEscape(c.ContainerName), nil
}

// Describe returns the blob's URL (no credentials are in it).
func (a *Azure) Describe(name string) string { return a.url + "/" + name }

// Get starts the download of name; the returned body streams (the SDK's
// retry reader resumes a broken download where it stopped).
func (a *Azure) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	resp, err := a.container.NewBlobClient(name).DownloadStream(ctx, nil)
	if err != nil {
		return nil, a.wrap("download", name, err)
	}
	return resp.NewRetryReader(ctx, &blob.RetryReaderOptions{MaxRetries: 3}), nil
}

// Put streams r as staged blocks; the blob changes only when the block
// list is committed after r ended.
func (a *Azure) Put(ctx context.Context, name string, r io.Reader) error {
	ct := "application/zip"
	_, err := a.container.NewBlockBlobClient(name).UploadStream(ctx, r, &blockblob.UploadStreamOptions{
		BlockSize:   AzureBlockSize,
		Concurrency: AzureConcurrency,
		HTTPHeaders: &blob.HTTPHeaders{BlobContentType: &ct},
	})
	if err != nil {
		return a.wrap("upload", name, err)
	}
	return nil
}

func (a *Azure) credentialsHint() string {
	if a.key {
		return "check [runners.cache.azure] AccountName and AccountKey"
	}
	return "check the Azure credentials of the environment ([runners.cache.azure] has no AccountKey: " +
		"workload identity's AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_FEDERATED_TOKEN_FILE, or a managed identity) " +
		"and that they may read and write blobs of the container"
}

// wrap turns Azure error codes into messages that say what to do.
func (a *Azure) wrap(op, name string, err error) error {
	var resp *azcore.ResponseError
	var authErr *azidentity.AuthenticationFailedError
	switch {
	case bloberror.HasCode(err, bloberror.BlobNotFound) && op == "download":
		return ErrNotFound
	case bloberror.HasCode(err, bloberror.ContainerNotFound):
		return fmt.Errorf("%s %s: container does not exist: create it or fix [runners.cache.azure] ContainerName", op, a.Describe(name))
	case errors.As(err, &authErr):
		return fmt.Errorf("%s %s: azure credentials: %s", op, a.Describe(name), a.credentialsHint())
	case errors.As(err, &resp) && (resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusUnauthorized ||
		resp.ErrorCode == string(bloberror.AuthenticationFailed) || resp.ErrorCode == string(bloberror.AuthorizationFailure)):
		return fmt.Errorf("%s %s: access denied (%s): %s", op, a.Describe(name), resp.ErrorCode, a.credentialsHint())
	case errors.As(err, &resp) && resp.StatusCode == http.StatusNotFound && op == "download":
		// A HEAD-less GET of a missing blob has the code in its body;
		// without one, a 404 still means nothing to restore.
		return ErrNotFound
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s %s: %w", op, a.Describe(name), err)
	case errors.As(err, &resp):
		return fmt.Errorf("%s %s: azure answered %d %s", op, a.Describe(name), resp.StatusCode, resp.ErrorCode)
	}
	return fmt.Errorf("%s %s: %w", op, a.Describe(name), err)
}
