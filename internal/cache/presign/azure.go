package presign

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/service"

	"github.com/podrunner/podrunner/internal/config"
)

// DefaultAzureStorageDomain is [runners.cache.azure] StorageDomain's
// default, Azure's public cloud (GitLab Runner's).
const DefaultAzureStorageDomain = "blob.core.windows.net"

// AzureConfig is how to reach a container of Azure Blob Storage.
type AzureConfig struct {
	config.CacheAzure
}

// Azure signs blob SAS URLs: a service SAS from the AccountKey, or without
// one a user delegation SAS from a key the Azure credentials of the
// runner's environment obtain (workload identity, managed identity), as
// GitLab Runner does.
type Azure struct {
	account   string
	container string
	url       string // of the container
	key       *sas.SharedKeyCredential
	svc       *service.Client // user delegation (no AccountKey)

	mu  sync.Mutex
	udc *service.UserDelegationCredential
	exp time.Time // of udc
}

// NewAzure checks the settings and builds the signer (no request is made).
func NewAzure(c AzureConfig) (*Azure, error) {
	if c.AccountName == "" || c.ContainerName == "" {
		return nil, errors.New("[runners.cache.azure] AccountName and ContainerName must be set")
	}
	svcURL, err := azureServiceURL(c.CacheAzure)
	if err != nil {
		return nil, err
	}
	a := &Azure{account: c.AccountName, container: c.ContainerName, url: svcURL + "/" + url.PathEscape(c.ContainerName)}
	if c.AccountKey != "" {
		a.key, err = azblob.NewSharedKeyCredential(c.AccountName, c.AccountKey)
		if err != nil {
			return nil, fmt.Errorf("[runners.cache.azure] AccountKey: %w", err)
		}
		return a, nil
	}
	cred, err := azidentity.NewDefaultAzureCredential(nil)
	if err != nil {
		return nil, fmt.Errorf("azure credentials of the runner's environment ([runners.cache.azure] has no AccountKey): %w", err)
	}
	a.svc, err = service.NewClient(svcURL+"/", cred, nil)
	if err != nil {
		return nil, fmt.Errorf("azure client for %s: %w", svcURL, err)
	}
	return a, nil
}

// azureServiceURL is https://<account>.<domain>, or with a StorageDomain
// that has a scheme (an emulator such as Azurite), <domain>/<account>.
func azureServiceURL(c config.CacheAzure) (string, error) {
	d := c.StorageDomain
	if d == "" {
		d = DefaultAzureStorageDomain
	}
	if strings.HasPrefix(d, "http://") || strings.HasPrefix(d, "https://") {
		u, err := url.Parse(strings.TrimSuffix(d, "/"))
		if err != nil || u.Host == "" {
			return "", fmt.Errorf("[runners.cache.azure] StorageDomain %q is not a URL", c.StorageDomain)
		}
		return u.String() + "/" + url.PathEscape(c.AccountName), nil
	}
	if strings.ContainsAny(d, "/?#") {
		return "", fmt.Errorf("[runners.cache.azure] StorageDomain %q must be a domain such as %s", c.StorageDomain, DefaultAzureStorageDomain)
	}
	return "https://" + c.AccountName + "." + d, nil
}

// GetURL signs a read of the blob object.
func (a *Azure) GetURL(ctx context.Context, object string, ttl time.Duration) (string, error) {
	return a.sign(ctx, object, ttl, sas.BlobPermissions{Read: true})
}

// PutURL signs a Put Blob of object (a block blob written whole, up to
// 5000 MiB); the PUT must say x-ms-blob-type.
func (a *Azure) PutURL(ctx context.Context, object string, ttl time.Duration) (string, http.Header, error) {
	u, err := a.sign(ctx, object, ttl, sas.BlobPermissions{Create: true, Write: true})
	if err != nil {
		return "", nil, err
	}
	return u, http.Header{"X-Ms-Blob-Type": {"BlockBlob"}}, nil
}

func (a *Azure) sign(ctx context.Context, object string, ttl time.Duration, perm sas.BlobPermissions) (string, error) {
	now := time.Now().UTC()
	v := sas.BlobSignatureValues{
		// A few minutes back: the store's clock may be behind ours.
		StartTime:     now.Add(-5 * time.Minute),
		ExpiryTime:    now.Add(clampTTL(ttl)),
		Permissions:   perm.String(),
		ContainerName: a.container,
		BlobName:      object,
	}
	blobURL := a.url + "/" + escapePath(object)
	if strings.HasPrefix(a.url, "https://") {
		v.Protocol = sas.ProtocolHTTPS
	}
	var (
		qp  sas.QueryParameters
		err error
	)
	if a.key != nil {
		qp, err = v.SignWithSharedKey(a.key)
	} else {
		var udc *service.UserDelegationCredential
		if udc, err = a.delegation(ctx, v.ExpiryTime); err == nil {
			qp, err = v.SignWithUserDelegation(udc)
		}
	}
	if err != nil {
		return "", fmt.Errorf("sign %s: %w", blobURL, err)
	}
	return blobURL + "?" + qp.Encode(), nil
}

// delegation returns a user delegation key valid until at least until,
// asking for a new one (valid 7 days, Azure's maximum) when needed.
func (a *Azure) delegation(ctx context.Context, until time.Time) (*service.UserDelegationCredential, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.udc != nil && a.exp.After(until) {
		return a.udc, nil
	}
	now := time.Now().UTC()
	exp := now.Add(MaxTTL)
	start, expiry := now.Add(-5*time.Minute).Format(sas.TimeFormat), exp.Format(sas.TimeFormat)
	udc, err := a.svc.GetUserDelegationCredential(ctx, service.KeyInfo{Start: &start, Expiry: &expiry}, nil)
	if err != nil {
		return nil, fmt.Errorf("user delegation key of the Azure credentials of the runner's environment "+
			"([runners.cache.azure] has no AccountKey: workload identity's AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_FEDERATED_TOKEN_FILE, "+
			"or a managed identity, with the Storage Blob Data Contributor role): %w", err)
	}
	a.udc, a.exp = udc, exp
	return udc, nil
}

// escapePath escapes each segment of a slash-separated object name.
func escapePath(name string) string {
	segs := strings.Split(name, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}
