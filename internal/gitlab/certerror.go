package gitlab

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// CertificateError is a GitLab whose TLS certificate the runner does not
// trust. Trying again gets the same answer, so nothing retries it.
type CertificateError struct {
	Host string
	Err  error
}

func (e *CertificateError) Error() string {
	return fmt.Sprintf("the TLS certificate of %s is not trusted (%v): give the CA that signed it with tls-ca-file in config.toml, "+
		"or as certs/%s.crt next to config.toml (Helm chart: the certsSecretName secret with %s.crt)", e.Host, e.Err, e.Host, e.Host)
}

func (e *CertificateError) Unwrap() error { return e.Err }

// certificateError returns a *CertificateError when err is a failed
// verification of host's certificate, else nil.
func certificateError(host string, err error) error {
	var (
		ua  x509.UnknownAuthorityError
		he  x509.HostnameError
		ci  x509.CertificateInvalidError
		cve *tls.CertificateVerificationError
	)
	if errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &ci) || errors.As(err, &cve) {
		return &CertificateError{Host: host, Err: err}
	}
	return nil
}

// IsCertificateError reports whether err is (or wraps) a *CertificateError.
func IsCertificateError(err error) bool {
	var ce *CertificateError
	return errors.As(err, &ce)
}
