package presign

import (
	"context"
	"encoding/base64"
	"encoding/xml"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/service"

	"github.com/podrunner/podrunner/internal/config"
)

// fixedToken is an Azure credential with one token.
type fixedToken struct{}

func (fixedToken) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: "test-token", ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// toServer sends every request to a TLS test server, whatever its host.
type toServer struct{ srv *httptest.Server }

func (s toServer) Do(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	r.URL.Host = s.srv.Listener.Addr().String()
	r.Host = ""
	return s.srv.Client().Transport.RoundTrip(r)
}

// delegationServer answers Get User Delegation Key as Azure documents it
// (the key valid for the Start and Expiry asked), with status code; it
// fails t on a request Azure would refuse.
func delegationServer(t *testing.T, status int) (*httptest.Server, *atomic.Int32) {
	var calls atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		q := r.URL.Query()
		if r.Method != http.MethodPost || r.URL.Path != "/" || q.Get("restype") != "service" || q.Get("comp") != "userdelegationkey" {
			t.Errorf("request %s %s", r.Method, r.URL)
		}
		if got := r.Header.Get("Authorization"); got != "Bearer test-token" {
			t.Errorf("Authorization %q", got)
		}
		if got := r.Header.Get("x-ms-version"); got != azureVersion {
			t.Errorf("x-ms-version %q, want %q", got, azureVersion)
		}
		var ki struct{ Start, Expiry string }
		b, _ := io.ReadAll(r.Body)
		if err := xml.Unmarshal(b, &ki); err != nil {
			t.Errorf("body %q: %v", b, err)
		}
		start, err1 := time.Parse(azureTimeFormat, ki.Start)
		expiry, err2 := time.Parse(azureTimeFormat, ki.Expiry)
		if err1 != nil || err2 != nil || expiry.Sub(start) > 7*24*time.Hour+5*time.Minute || !expiry.After(time.Now()) {
			t.Errorf("KeyInfo %+v", ki)
		}
		if status != http.StatusOK {
			w.Header().Set("x-ms-error-code", "AuthorizationPermissionMismatch")
			w.WriteHeader(status)
			return
		}
		w.Header().Set("Content-Type", "application/xml")
		io.WriteString(w, `<?xml version="1.0" encoding="utf-8"?><UserDelegationKey><SignedOid>0b1c2d3e-oid</SignedOid>`+
			`<SignedTid>4f5a6b7c-tid</SignedTid><SignedStart>`+ki.Start+`</SignedStart><SignedExpiry>`+ki.Expiry+`</SignedExpiry>`+
			`<SignedService>b</SignedService><SignedVersion>`+azureVersion+`</SignedVersion>`+
			`<Value>`+base64.StdEncoding.EncodeToString([]byte("the delegation key 0123456789abc"))+`</Value></UserDelegationKey>`)
	}))
	t.Cleanup(srv.Close)
	return srv, &calls
}

// TestAzureSignsAsTheSDK: the service SAS and the user delegation SAS
// are the URLs azblob's sas package makes from the same values.
func TestAzureSignsAsTheSDK(t *testing.T) {
	ctx := t.Context()
	srv, calls := delegationServer(t, http.StatusOK)
	const account, key = "acct", "YWNjb3VudCBrZXkgb2YgdGhlIHRlc3Q="
	now := time.Now().UTC().Truncate(time.Second)
	ttl := 2 * time.Hour
	values := func(object string, perm sas.BlobPermissions, https bool) sas.BlobSignatureValues {
		v := sas.BlobSignatureValues{StartTime: now.Add(-5 * time.Minute), ExpiryTime: now.Add(ttl),
			Permissions: perm.String(), ContainerName: "cache", BlobName: object}
		if https {
			v.Protocol = sas.ProtocolHTTPS
		}
		return v
	}
	sdkCred, err := azblob.NewSharedKeyCredential(account, key)
	if err != nil {
		t.Fatal(err)
	}
	sdkSvc, err := service.NewClient("https://"+account+".blob.core.windows.net/", fixedToken{},
		&service.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: toServer{srv}}})
	if err != nil {
		t.Fatal(err)
	}
	ks, ke := now.Add(-5*time.Minute).Format(sas.TimeFormat), now.Add(MaxTTL).Format(sas.TimeFormat)
	sdkUDC, err := sdkSvc.GetUserDelegationCredential(ctx, service.KeyInfo{Start: &ks, Expiry: &ke}, nil)
	if err != nil {
		t.Fatal(err)
	}

	withKey, err := NewAzure(AzureConfig{CacheAzure: config.CacheAzure{AccountName: account, AccountKey: key, ContainerName: "cache"}})
	if err != nil {
		t.Fatal(err)
	}
	emulator, err := NewAzure(AzureConfig{CacheAzure: config.CacheAzure{AccountName: account, AccountKey: key, ContainerName: "cache",
		StorageDomain: "http://127.0.0.1:10000"}})
	if err != nil {
		t.Fatal(err)
	}
	delegated := delegatedAzure(t, srv)
	// A key for the same times as the SDK's, so that both sign alike;
	// signing reuses it (its expiry is after every URL's).
	if delegated.udk, err = delegated.fetchDelegationKey(ctx, now); err != nil {
		t.Fatal(err)
	}

	for _, object := range []string{"runner/abc/project/1/key", "runner/abc/project/1/a b+ü%?#&=", `runner/abc/project/1/back\slash`} {
		for _, perm := range []sas.BlobPermissions{{Read: true}, {Create: true, Write: true}} {
			qp, err := values(object, perm, true).SignWithSharedKey(sdkCred)
			if err != nil {
				t.Fatal(err)
			}
			check(t, withKey, object, now, ttl, perm.String(), "https://acct.blob.core.windows.net/cache/"+escapePath(object)+"?"+qp.Encode())

			qp, err = values(object, perm, false).SignWithSharedKey(sdkCred)
			if err != nil {
				t.Fatal(err)
			}
			check(t, emulator, object, now, ttl, perm.String(), "http://127.0.0.1:10000/acct/cache/"+escapePath(object)+"?"+qp.Encode())

			qp, err = values(object, perm, true).SignWithUserDelegation(sdkUDC)
			if err != nil {
				t.Fatal(err)
			}
			check(t, delegated, object, now, ttl, perm.String(), "https://acct.blob.core.windows.net/cache/"+escapePath(object)+"?"+qp.Encode())
		}
	}
	// One key for the SDK, one for podrunner, reused for every URL.
	if n := calls.Load(); n != 2 {
		t.Errorf("%d user delegation key requests, want 2", n)
	}
}

func check(t *testing.T, a *Azure, object string, now time.Time, ttl time.Duration, perm, want string) {
	t.Helper()
	got, err := a.sign(t.Context(), object, now, ttl, perm)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("%s %q:\n got %s\nwant %s", perm, object, got, want)
	}
}

// delegatedAzure signs with user delegation keys from srv.
func delegatedAzure(t *testing.T, srv *httptest.Server) *Azure {
	t.Helper()
	a, err := NewAzure(AzureConfig{CacheAzure: config.CacheAzure{AccountName: "acct", ContainerName: "cache"},
		Credential: fixedToken{}, Transport: toServer{srv}})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestAzureDelegationKeyReused: one key serves every URL it outlives.
func TestAzureDelegationKeyReused(t *testing.T) {
	srv, calls := delegationServer(t, http.StatusOK)
	a := delegatedAzure(t, srv)
	for range 3 {
		u, err := a.GetURL(t.Context(), "k", time.Hour)
		if err != nil || !strings.Contains(u, "skoid=0b1c2d3e-oid") || !strings.Contains(u, "sig=") {
			t.Fatalf("GetURL: %s, %v", u, err)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("%d key requests for 3 URLs, want 1", n)
	}
	// A key that ends before the URL would is replaced.
	a.udk.Expiry = time.Now().Add(time.Minute)
	if _, err := a.GetURL(t.Context(), "k", time.Hour); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("%d key requests after the key ran short, want 2", n)
	}
}

// TestAzureDelegationErrors: a key Azure refuses, or one asked over
// plain http, is an error that says what to set up; no token leaks.
func TestAzureDelegationErrors(t *testing.T) {
	srv, _ := delegationServer(t, http.StatusForbidden)
	_, err := delegatedAzure(t, srv).GetURL(t.Context(), "k", time.Hour)
	if err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "AuthorizationPermissionMismatch") ||
		!strings.Contains(err.Error(), "Storage Blob Data Contributor") || strings.Contains(err.Error(), "test-token") {
		t.Errorf("refused key: %v", err)
	}

	plain, err := NewAzure(AzureConfig{CacheAzure: config.CacheAzure{AccountName: "acct", ContainerName: "cache", StorageDomain: "http://127.0.0.1:1"},
		Credential: fixedToken{}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err = plain.PutURL(t.Context(), "k", time.Hour); err == nil || !strings.Contains(err.Error(), "https") {
		t.Errorf("a bearer token over http: %v", err)
	}
}
