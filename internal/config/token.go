package config

import (
	"github.com/podrunner/podrunner/internal/gitlab"
	"github.com/podrunner/podrunner/internal/job"
)

// ShortToken is the short form of a token used in names and logs (never the
// full token); see job.ShortToken, which the builds directory and pod
// names use too, so all of them agree.
func ShortToken(token string) string { return job.ShortToken(token) }

// IsAuthenticationToken reports whether token is a runner authentication
// token (glrt-) as created in GitLab's UI, as opposed to a legacy
// registration token.
func IsAuthenticationToken(token string) bool { return gitlab.IsAuthenticationToken(token) }
