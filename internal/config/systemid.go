package config

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// SystemIDFile is the name of the file next to config.toml that keeps the
// system id.
const SystemIDFile = ".runner_system_id"

// machineIDFiles are read in order for a stable machine id; a variable so
// tests can point it elsewhere.
var machineIDFiles = []string{"/etc/machine-id", "/var/lib/dbus/machine-id"}

var systemIDRe = regexp.MustCompile(`^[sr]_[0-9a-zA-Z]{12}$`)

// SystemID returns the runner's system id, stored in
// <configDir>/.runner_system_id. When the file is missing or invalid a new
// id is made like GitLab Runner does ("s_" + 12 hex chars of
// HMAC-SHA256(machine id, "gitlab-runner"), or "r_" + 12 random
// alphanumerics without a machine id) and written (mode 0600). If writing
// fails, the new id is returned together with the error so callers can
// warn and go on.
func SystemID(configDir string) (string, error) {
	path := filepath.Join(configDir, SystemIDFile)
	data, err := os.ReadFile(path)
	if err == nil {
		if id := strings.TrimSpace(string(data)); systemIDRe.MatchString(id) {
			return id, nil
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read system id: %w", err)
	}
	id, err := newSystemID()
	if err != nil {
		return "", err
	}
	if err := WriteFileAtomic(path, []byte(id)); err != nil {
		return id, fmt.Errorf("save system id: %w", err)
	}
	return id, nil
}

func newSystemID() (string, error) {
	for _, f := range machineIDFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		mid := strings.TrimSpace(string(b))
		if mid == "" {
			continue
		}
		m := hmac.New(sha256.New, []byte(mid))
		m.Write([]byte("gitlab-runner"))
		return "s_" + hex.EncodeToString(m.Sum(nil))[:12], nil
	}
	const alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	buf := make([]byte, 12)
	if _, err := rand.Read(buf); err != nil {
		return "", fmt.Errorf("generate system id: %w", err)
	}
	for i, b := range buf {
		buf[i] = alnum[int(b)%len(alnum)]
	}
	return "r_" + string(buf), nil
}

// NewSystemID makes a system id without storing it, for runners that have
// no config file (run-single from flags, exec).
func NewSystemID() (string, error) { return newSystemID() }
