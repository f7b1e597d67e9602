package presign

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/podrunner/podrunner/internal/config"
)

// DefaultAzureStorageDomain is [runners.cache.azure] StorageDomain's
// default, Azure's public cloud (GitLab Runner's).
const DefaultAzureStorageDomain = "blob.core.windows.net"

// azureVersion is the Blob service version of the SAS URLs (sv) and of
// the Get User Delegation Key request, with the string-to-sign formats of
// that version. It is the version azblob v1.8.3 signs with: the URLs are
// the ones that SDK made (TestAzureSignsAsTheSDK), without linking its
// blob clients into the manager (6 MB of stripped binary and about
// 1.5 MiB of idle memory, bench/README.md).
const azureVersion = "2026-12-06"

// azureTimeFormat is how SAS and key times are written.
const azureTimeFormat = "2006-01-02T15:04:05Z"

// azureScope is the OAuth scope of Azure Storage's data plane.
const azureScope = "https://storage.azure.com/.default"

// AzureConfig is how to reach a container of Azure Blob Storage.
type AzureConfig struct {
	config.CacheAzure
	// Transport for the user delegation key request (tests); Go's default
	// when nil.
	Transport policy.Transporter
	// Credential replaces the Azure credentials of the runner's
	// environment (tests).
	Credential azcore.TokenCredential
}

// Azure signs blob SAS URLs: a service SAS from the AccountKey, or without
// one a user delegation SAS from a key the Azure credentials of the
// runner's environment obtain (workload identity, managed identity), as
// GitLab Runner does.
type Azure struct {
	account   string
	container string
	svcURL    string
	url       string // of the container
	key       []byte // the AccountKey; nil for user delegation
	pl        runtime.Pipeline

	mu  sync.Mutex
	udk *delegationKey
}

// delegationKey is Get User Delegation Key's answer.
type delegationKey struct {
	OID              string    `xml:"SignedOid"`
	TID              string    `xml:"SignedTid"`
	Start            time.Time `xml:"SignedStart"`
	Expiry           time.Time `xml:"SignedExpiry"`
	Service          string    `xml:"SignedService"`
	Version          string    `xml:"SignedVersion"`
	DelegatedUserTID string    `xml:"SignedDelegatedUserTid"`
	Value            string    `xml:"Value"`
	key              []byte    // Value, decoded
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
	a := &Azure{account: c.AccountName, container: c.ContainerName, svcURL: svcURL, url: svcURL + "/" + url.PathEscape(c.ContainerName)}
	if c.AccountKey != "" {
		a.key, err = base64.StdEncoding.DecodeString(c.AccountKey)
		if err != nil {
			return nil, fmt.Errorf("[runners.cache.azure] AccountKey is not base64 (copy it from the storage account's access keys): %w", err)
		}
		return a, nil
	}
	cred := c.Credential
	if cred == nil {
		if cred, err = azidentity.NewDefaultAzureCredential(nil); err != nil {
			return nil, fmt.Errorf("azure credentials of the runner's environment ([runners.cache.azure] has no AccountKey): %w", err)
		}
	}
	// The bearer token travels only over TLS (the policy refuses http).
	a.pl = runtime.NewPipeline("podrunner", "", runtime.PipelineOptions{
		PerRetry: []policy.Policy{runtime.NewBearerTokenPolicy(cred, []string{azureScope}, nil)},
	}, &policy.ClientOptions{Transport: c.Transport})
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
	return a.sign(ctx, object, time.Now(), ttl, "r")
}

// PutURL signs a Put Blob of object (a block blob written whole, up to
// 5000 MiB); the PUT must say x-ms-blob-type.
func (a *Azure) PutURL(ctx context.Context, object string, ttl time.Duration) (string, http.Header, error) {
	u, err := a.sign(ctx, object, time.Now(), ttl, "cw")
	if err != nil {
		return "", nil, err
	}
	return u, http.Header{"X-Ms-Blob-Type": {"BlockBlob"}}, nil
}

// sign makes a blob SAS (sr=b) with the permissions perm, in the order
// Azure lists them ("racwd…"). The string-to-sign formats are the ones
// "Create a service SAS" and "Create a user delegation SAS" give for
// azureVersion; fields podrunner never sets are empty lines.
func (a *Azure) sign(ctx context.Context, object string, now time.Time, ttl time.Duration, perm string) (string, error) {
	now = now.UTC()
	// A few minutes back: the store's clock may be behind ours.
	start, expiry := now.Add(-5*time.Minute), now.Add(clampTTL(ttl))
	blobURL := a.url + "/" + escapePath(object)
	q := url.Values{
		"sv": {azureVersion},
		"st": {start.Format(azureTimeFormat)},
		"se": {expiry.Format(azureTimeFormat)},
		"sr": {"b"},
		"sp": {perm},
	}
	protocol := ""
	if strings.HasPrefix(a.url, "https://") {
		protocol = "https"
		q.Set("spr", protocol)
	}
	// Azure reads a backslash in a blob name as a slash.
	resource := "/blob/" + a.account + "/" + a.container + "/" + strings.ReplaceAll(object, `\`, "/")
	head := []string{perm, q.Get("st"), q.Get("se"), resource}
	// signedIP, signedProtocol, signedVersion, signedResource,
	// signedSnapshotTime, signedEncryptionScope.
	tail := []string{"", protocol, azureVersion, "b", "", ""}
	// rscc, rscd, rsce, rscl, rsct.
	overrides := []string{"", "", "", "", ""}
	var fields []string
	key := a.key
	if key != nil {
		fields = slices.Concat(head, []string{""} /* signedIdentifier */, tail, overrides)
	} else {
		udk, err := a.delegation(ctx, expiry)
		if err != nil {
			return "", fmt.Errorf("sign %s: %w", blobURL, err)
		}
		key = udk.key
		skt, ske := udk.Start.UTC().Format(azureTimeFormat), udk.Expiry.UTC().Format(azureTimeFormat)
		q.Set("skoid", udk.OID)
		q.Set("sktid", udk.TID)
		q.Set("skt", skt)
		q.Set("ske", ske)
		q.Set("sks", udk.Service)
		q.Set("skv", udk.Version)
		if udk.DelegatedUserTID != "" {
			q.Set("skdutid", udk.DelegatedUserTID)
		}
		fields = slices.Concat(head,
			[]string{udk.OID, udk.TID, skt, ske, udk.Service, udk.Version,
				"", "", "", // signedAuthorizedUserObjectId, signedUnauthorizedUserObjectId, signedCorrelationId
				udk.DelegatedUserTID, "", // signedKeyDelegatedUserTenantId, signedDelegatedUserObjectId
			},
			tail,
			[]string{"", ""}, // signedRequestHeaders, signedRequestQueryParameters
			overrides)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(strings.Join(fields, "\n")))
	q.Set("sig", base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	return blobURL + "?" + q.Encode(), nil
}

// delegation returns a user delegation key valid until at least until,
// asking for a new one (valid 7 days, Azure's maximum) when needed.
func (a *Azure) delegation(ctx context.Context, until time.Time) (*delegationKey, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.udk != nil && a.udk.Expiry.After(until) {
		return a.udk, nil
	}
	udk, err := a.fetchDelegationKey(ctx, time.Now().UTC())
	if err != nil {
		return nil, fmt.Errorf("user delegation key of the Azure credentials of the runner's environment "+
			"([runners.cache.azure] has no AccountKey: workload identity's AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_FEDERATED_TOKEN_FILE, "+
			"or a managed identity, with the Storage Blob Data Contributor role): %w", err)
	}
	a.udk = udk
	return udk, nil
}

// fetchDelegationKey calls Get User Delegation Key for a key valid from
// a few minutes before now for MaxTTL.
func (a *Azure) fetchDelegationKey(ctx context.Context, now time.Time) (*delegationKey, error) {
	req, err := runtime.NewRequest(ctx, http.MethodPost, a.svcURL+"/?restype=service&comp=userdelegationkey")
	if err != nil {
		return nil, err
	}
	req.Raw().Header.Set("x-ms-version", azureVersion)
	req.Raw().Header.Set("Accept", "application/xml")
	body := struct {
		XMLName xml.Name `xml:"KeyInfo"`
		Start   string   `xml:"Start"`
		Expiry  string   `xml:"Expiry"`
	}{Start: now.Add(-5 * time.Minute).Format(azureTimeFormat), Expiry: now.Add(MaxTTL).Format(azureTimeFormat)}
	if err := runtime.MarshalAsXML(req, body); err != nil {
		return nil, err
	}
	resp, err := a.pl.Do(req)
	if err != nil {
		return nil, err
	}
	if !runtime.HasStatusCode(resp, http.StatusOK) {
		return nil, runtime.NewResponseError(resp)
	}
	var udk delegationKey
	if err := runtime.UnmarshalAsXML(resp, &udk); err != nil {
		return nil, fmt.Errorf("read the key: %w", err)
	}
	if udk.key, err = base64.StdEncoding.DecodeString(udk.Value); err != nil || len(udk.key) == 0 || udk.OID == "" || udk.Expiry.IsZero() {
		return nil, fmt.Errorf("the answer has no usable key (SignedOid %q, SignedExpiry %v, Value of %d bytes)", udk.OID, udk.Expiry, len(udk.key))
	}
	return &udk, nil
}

// escapePath escapes each segment of a slash-separated object name.
func escapePath(name string) string {
	segs := strings.Split(name, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}
