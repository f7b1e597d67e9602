package cache_test

import (
	"testing"

	"github.com/podrunner/podrunner/internal/cache"
	"github.com/podrunner/podrunner/internal/cache/cachetest"
)

func TestArchiveRoundTripDir(t *testing.T) {
	cachetest.RoundTrip(t, cache.Dir{Root: t.TempDir()}, "group/demo/key/cache.zip")
}
