package coordinator

import (
	"strings"
	"testing"

	"github.com/podrunner/podrunner/internal/job"
)

// TestRegistryCredentials: with a container registry, each job gets the
// CI_REGISTRY* variables of that registry and a registry credential, as
// GitLab sends them; without one, the variables name the Omnibus default
// (<host>:5050) and no credential is sent (no registry to log in to).
func TestRegistryCredentials(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name               string
		reg                *Registry
		wantUser, wantPass string // wantPass "token": the job token
	}{
		{name: "none"},
		{name: "gitlab login", reg: &Registry{Host: "registry.example.com:5000"}, wantUser: "gitlab-ci-token", wantPass: "token"},
		{name: "static account", reg: &Registry{Host: "10.0.0.1:5000", Username: "ci", Password: "pw"}, wantUser: "ci", wantPass: "pw"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, c, tok := setup(t, Options{Registry: tc.reg}, simpleCI)
			if _, err := s.CreatePipeline("group/demo", "main"); err != nil {
				t.Fatal(err)
			}
			p := c.payload(c.requestJob(tok, "", nil))
			vars := map[string]job.Variable{}
			for _, v := range p.Variables {
				vars[v.Key] = v
			}
			if tc.reg == nil {
				if len(p.Credentials) != 0 {
					t.Errorf("credentials = %+v, want none", p.Credentials)
				}
				if v := vars["CI_REGISTRY"].Value; !strings.HasSuffix(v, ":5050") {
					t.Errorf("CI_REGISTRY = %q without a registry, want the default <host>:5050", v)
				}
				return
			}
			pass := tc.wantPass
			if pass == "token" {
				pass = p.Token
			}
			want := job.Credential{Type: "registry", URL: tc.reg.Host, Username: tc.wantUser, Password: pass}
			if len(p.Credentials) != 1 || p.Credentials[0] != want {
				t.Errorf("credentials = %+v, want [%+v]", p.Credentials, want)
			}
			for k, v := range map[string]string{
				"CI_REGISTRY": tc.reg.Host, "CI_REGISTRY_IMAGE": tc.reg.Host + "/group/demo",
				"CI_REGISTRY_USER": tc.wantUser, "CI_REGISTRY_PASSWORD": pass,
			} {
				if vars[k].Value != v {
					t.Errorf("%s = %q, want %q", k, vars[k].Value, v)
				}
			}
			if pw := vars["CI_REGISTRY_PASSWORD"]; !pw.Masked || pw.Public {
				t.Errorf("CI_REGISTRY_PASSWORD masked=%v public=%v, want masked and not public", pw.Masked, pw.Public)
			}
		})
	}
}
