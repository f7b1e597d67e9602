package config

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	toml "github.com/pelletier/go-toml/v2"
)

// Marshal encodes c in GitLab Runner's layout.
func (c *Config) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	enc := toml.NewEncoder(&buf).SetIndentTables(true)
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	return buf.Bytes(), nil
}

// Save writes c to path atomically (temporary file in the same directory,
// fsync, rename) with mode 0600, creating the directory (0700) if needed.
// The file holds runner tokens, so it is never group or world readable.
func (c *Config) Save(path string) error {
	data, err := c.Marshal()
	if err != nil {
		return err
	}
	return WriteFileAtomic(path, data)
}

// WriteFileAtomic replaces path with data, mode 0600.
func WriteFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create config directory %s: %w", dir, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	name := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(name)
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(name, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	ok = true
	// Make the rename durable; failure here is not worth failing the save.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// FindRunner returns the index of the first runner matching all non-empty
// selectors, or -1.
func (c *Config) FindRunner(name, url, token string) int {
	for i, r := range c.Runners {
		if r == nil {
			continue
		}
		if name != "" && r.Name != name {
			continue
		}
		if url != "" && !sameURL(r.URL, url) {
			continue
		}
		if token != "" && r.Token != token {
			continue
		}
		return i
	}
	return -1
}

func sameURL(a, b string) bool {
	na, _, err1 := NormalizeURL(a)
	nb, _, err2 := NormalizeURL(b)
	if err1 != nil || err2 != nil {
		return a == b
	}
	return na == nb
}
