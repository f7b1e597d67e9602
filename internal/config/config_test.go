package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
)

const validDoc = `concurrent = 4
check_interval = 0
log_level = "info"
log_format = "json"
listen_address = ":9252"
shutdown_timeout = 60
connection_max_age = "15m"

[session_server]
  listen_address = "[::]:8093"
  session_timeout = 1800

[[runners]]
  name = "k8s"
  url = "https://gitlab.example.com/"
  id = 42
  token = "glrt-t1_abcdefghijklmnop"
  token_obtained_at = 2026-01-02T03:04:05Z
  token_expires_at = 0001-01-01T00:00:00Z
  executor = "kubernetes"
  limit = 2
  environment = ["A=1", "B=x=y"]
  unhealthy_interval = "30m"
  [runners.feature_flags]
    FF_TIMESTAMPS = false
  [runners.kubernetes]
    namespace = "gitlab-runner"
    image = "alpine:3.20"
    cpu_limit = "1"
    cpu_request = 0.5
    memory_limit = "512Mi"
    memory_limit_overwrite_max_allowed = "2Gi"
    pull_policy = "if-not-present"
    namespace_overwrite_allowed = "^ci-.*$"
    privileged = false
    poll_timeout = 600
    cleanup_resources_timeout = "5m"
    pod_termination_grace_period_seconds = 10
    image_pull_secrets = ["regcred"]
    host_aliases = [{ ip = "10.0.0.1", hostnames = ["git.local"] }]
    [runners.kubernetes.node_selector]
      "kubernetes.io/os" = "linux"
    [runners.kubernetes.node_tolerations]
      "node-role=ci" = "NoSchedule"
    [runners.kubernetes.pod_security_context]
      run_as_user = 1000
      fs_group = 1000
    [runners.kubernetes.build_container_security_context]
      allow_privilege_escalation = false
      [runners.kubernetes.build_container_security_context.capabilities]
        drop = ["ALL"]
    [runners.kubernetes.affinity.node_affinity.required_during_scheduling_ignored_during_execution]
      [[runners.kubernetes.affinity.node_affinity.required_during_scheduling_ignored_during_execution.node_selector_terms]]
        [[runners.kubernetes.affinity.node_affinity.required_during_scheduling_ignored_during_execution.node_selector_terms.match_expressions]]
          key = "pool"
          operator = "In"
          values = ["ci"]
    [runners.kubernetes.dns_config]
      nameservers = ["1.1.1.1"]
    [[runners.kubernetes.volumes.empty_dir]]
      name = "scratch"
      mount_path = "/scratch"
      medium = "Memory"
      size_limit = "1Gi"
    [[runners.kubernetes.volumes.pvc]]
      name = "cache"
      mount_path = "/cache"
  [runners.cache]
    Type = "s3"
    Shared = true
    [runners.cache.s3]
      ServerAddress = "minio:9000"
      BucketName = "runner"
      Insecure = true
      AuthenticationType = "access-key"

[[runners]]
  name = "local"
  url = "http://127.0.0.1:8080/ci"
  token = "legacy-token"
  executor = "shell"
`

func TestParseValid(t *testing.T) {
	cfg, warns, err := Parse([]byte(validDoc), "config.toml")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if len(warns) != 1 || warns[0].Line != 79 || warns[0].Key != "runners[1].url" {
		t.Fatalf("warnings = %v, want one /ci warning at line 79", warns)
	}
	if cfg.Concurrent != 4 || cfg.CheckInterval != DefaultCheckInterval || cfg.ShutdownTimeout != 60 {
		t.Errorf("globals = %d/%d/%d", cfg.Concurrent, cfg.CheckInterval, cfg.ShutdownTimeout)
	}
	if cfg.ConnectionMaxAge.Get(0) != 15*time.Minute {
		t.Errorf("connection_max_age = %v", cfg.ConnectionMaxAge)
	}
	if cfg.SessionServer == nil || cfg.SessionServer.SessionTimeout != 1800 {
		t.Errorf("session_server = %+v", cfg.SessionServer)
	}
	if len(cfg.Runners) != 2 {
		t.Fatalf("runners = %d", len(cfg.Runners))
	}
	r := cfg.Runners[0]
	if r.URL != "https://gitlab.example.com" || r.ID != 42 || r.RequestConcurrency != 1 || r.OutputLimit != 4096 {
		t.Errorf("runner 0 = url %q id %d rc %d ol %d", r.URL, r.ID, r.RequestConcurrency, r.OutputLimit)
	}
	if !r.TokenObtainedAt.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Errorf("token_obtained_at = %v", r.TokenObtainedAt)
	}
	if r.UnhealthyInterval.Get(0) != 30*time.Minute || r.FeatureFlags["FF_TIMESTAMPS"] {
		t.Errorf("unhealthy_interval/feature_flags = %v %v", r.UnhealthyInterval, r.FeatureFlags)
	}
	k := r.Kubernetes
	if k.Namespace != "gitlab-runner" || k.CPURequest != "0.5" || !reflect.DeepEqual([]string(k.PullPolicy), []string{"if-not-present"}) {
		t.Errorf("kubernetes = ns %q cpu_request %q pull %v", k.Namespace, k.CPURequest, k.PullPolicy)
	}
	if k.Privileged == nil || *k.Privileged || k.CleanupResourcesTimeout.Get(0) != 5*time.Minute || *k.PodTerminationGracePeriodSeconds != 10 {
		t.Errorf("kubernetes misc = %+v", k)
	}
	if k.NodeSelector["kubernetes.io/os"] != "linux" || k.NodeTolerations["node-role=ci"] != "NoSchedule" {
		t.Errorf("maps = %v %v", k.NodeSelector, k.NodeTolerations)
	}
	if len(k.HostAliases) != 1 || k.HostAliases[0].Hostnames[0] != "git.local" {
		t.Errorf("host_aliases = %+v", k.HostAliases)
	}
	if *k.PodSecurityContext.RunAsUser != 1000 || k.BuildContainerSecurityContext.Capabilities.Drop[0] != "ALL" {
		t.Errorf("security contexts = %+v %+v", k.PodSecurityContext, k.BuildContainerSecurityContext)
	}
	me := k.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[0].MatchExpressions[0]
	if me.Key != "pool" || me.Values[0] != "ci" {
		t.Errorf("affinity = %+v", me)
	}
	if ed := k.Volumes.EmptyDirs; len(ed) != 1 || ed[0].Name != "scratch" || ed[0].SizeLimit != "1Gi" || ed[0].Medium != "Memory" {
		t.Errorf("empty_dir = %+v", ed)
	}
	if r.Cache.S3.ServerAddress != "minio:9000" || !r.Cache.Shared {
		t.Errorf("cache = %+v", r.Cache)
	}
	if cfg.Runners[1].URL != "http://127.0.0.1:8080" {
		t.Errorf("runner 1 url = %q", cfg.Runners[1].URL)
	}
}

func TestParseDefaults(t *testing.T) {
	cfg, warns, err := Parse([]byte(""), "config.toml")
	if err != nil || len(warns) != 0 {
		t.Fatalf("Parse empty: %v %v", err, warns)
	}
	if cfg.Concurrent != 1 || cfg.CheckInterval != 3 || cfg.ShutdownTimeout != 30 {
		t.Errorf("defaults = %+v", cfg)
	}
}

func TestParseErrors(t *testing.T) {
	const runner = "[[runners]]\nurl = \"https://gitlab.example.com\"\ntoken = \"t\"\nexecutor = \"shell\"\n"
	tests := []struct {
		name string
		doc  string
		want []string // each line of the error, exactly
	}{
		{"concurrent zero", "concurrent = 0\n", []string{"config.toml:1: concurrent: must be at least 1, got 0"}},
		{"concurrent string", "\n\nconcurrent = \"4\"\n", []string{"config.toml:3: concurrent: wrong type: got a TOML string, want an integer"}},
		{"syntax", "concurrent = 1\n[[runners]\n", []string{"config.toml:2: expected ']]' to close array table name"}},
		{"unknown executor", runner[:len(runner)-19] + "\n\n\nexecutor = \"dockr\"\n", []string{`config.toml:7: runners[0].executor: unknown executor "dockr": use "shell" or "kubernetes"`}},
		{"missing executor and token", "concurrent = 1\n\n[[runners]]\nurl = \"https://x\"\n", []string{
			`config.toml:3: runners[0].executor: missing executor: use "shell" or "kubernetes"`,
			`config.toml:3: runners[0].token: missing token: run "podrunner register" or copy the runner authentication token (glrt-...)`,
		}},
		{"bad url", "[[runners]]\nurl = \"gitlab.example.com\"\ntoken = \"t\"\nexecutor = \"shell\"\n", []string{`config.toml:2: runners[0].url: invalid URL "gitlab.example.com": the scheme must be http or https (e.g. https://gitlab.example.com)`}},
		{"second runner wrong type", runner + runner + "limit = \"2\"\n", []string{"config.toml:9: runners[1].limit: wrong type: got a TOML string, want an integer"}},
		{"log format", "log_format = \"xml\"\n", []string{`config.toml:1: log_format: unknown log format "xml": use one of "runner", "text", "json"`}},
		{"environment", runner + "environment = [\"OK=1\", \"BAD\"]\n", []string{`config.toml:5: runners[0].environment[1]: invalid entry "BAD": use "KEY=VALUE"`}},
		{"negative limit", runner + "limit = -1\n", []string{"config.toml:5: runners[0].limit: must not be negative, got -1"}},
		{"quantity", runner + "[runners.kubernetes]\nnamespace = \"x\"\nmemory_limit = \"1GB\"\n", []string{`config.toml:7: runners[0].kubernetes.memory_limit: invalid quantity "1GB": use a Kubernetes quantity such as "500m", "0.5", "512Mi" or "2Gi"`}},
		{"quantity bool", runner + "[runners.kubernetes]\ncpu_limit = true\n", []string{`config.toml:6: runners[0].kubernetes.cpu_limit: expected a quantity such as "512Mi" or "0.5", got boolean`}},
		{"duration", runner + "[runners.kubernetes]\ncleanup_resources_timeout = \"5 minutes\"\n", []string{`config.toml:6: runners[0].kubernetes.cleanup_resources_timeout: invalid duration "5 minutes": use a Go duration such as "90s", "15m" or "1h30m"`}},
		{"pull policy type", runner + "[runners.kubernetes]\npull_policy = 1\n", []string{`config.toml:6: runners[0].kubernetes.pull_policy: expected a string or an array of strings, got integer`}},
		{"pull policy value", runner + "[runners.kubernetes]\npull_policy = [\"always\", \"sometimes\"]\n", []string{`config.toml:6: runners[0].kubernetes.pull_policy[1]: unknown pull policy "sometimes": use one of "always", "if-not-present", "never"`}},
		{"regex", runner + "[runners.kubernetes]\nnamespace_overwrite_allowed = \"ci-(\"\n", []string{"config.toml:6: runners[0].kubernetes.namespace_overwrite_allowed: invalid regular expression \"ci-(\": missing closing ): `ci-(`"}},
		{"volume", runner + "[[runners.kubernetes.volumes.empty_dir]]\nname = \"a\"\nmount_path = \"/a\"\n[[runners.kubernetes.volumes.empty_dir]]\nname = \"b\"\nsize_limit = \"lots\"\n", []string{
			"config.toml:8: runners[0].kubernetes.volumes.empty_dir[1].mount_path: missing mount_path",
			`config.toml:10: runners[0].kubernetes.volumes.empty_dir[1].size_limit: invalid quantity "lots": use a Kubernetes quantity such as "500m", "0.5", "512Mi" or "2Gi"`,
		}},
		{"toleration in inline table", runner + "[runners.kubernetes]\nnode_tolerations = { \"a=b\" = \"NoSchedule\", \"c\" = \"Never\" }\n", []string{`config.toml:6: runners[0].kubernetes.node_tolerations.c: unknown taint effect "Never": use "NoSchedule", "PreferNoSchedule" or "NoExecute"`}},
		{"host alias inline array", runner + "[runners.kubernetes]\nhost_aliases = [\n  { ip = \"10.0.0.1\", hostnames = [\"a\"] },\n  { ip = \"nope\", hostnames = [\"b\"] },\n]\n", []string{`config.toml:8: runners[0].kubernetes.host_aliases[1].ip: invalid IP address "nope"`}},
		{"cache type", runner + "[runners.cache]\nType = \"ftp\"\n", []string{`config.toml:6: runners[0].cache.Type: unknown cache type "ftp": use "s3", "gcs" or "azure"`}},
		{"session server type", "[session_server]\nsession_timeout = \"long\"\n", []string{"config.toml:2: session_server.session_timeout: wrong type: got a TOML string, want an integer"}},
		{"time", runner + "token_obtained_at = \"yesterday\"\n", []string{"config.toml:5: runners[0].token_obtained_at: invalid date-time: use RFC 3339, e.g. 2026-01-02T15:04:05Z"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, _, err := Parse([]byte(tt.doc), "config.toml")
			if err == nil {
				t.Fatalf("Parse succeeded (%+v), want error", cfg)
			}
			got := strings.Split(err.Error(), "\n")
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("error =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			var ce *Error
			if !errors.As(err, &ce) || ce.Line == 0 {
				t.Errorf("error %v is not a *Error with a line", err)
			}
		})
	}
}

func TestParseWarnings(t *testing.T) {
	doc := "concurrent = 1\nconcurent = 2\n\n[[runners]]\nurl = \"https://x\"\ntoken = \"t\"\nexecutor = \"shell\"\nexecuter = \"shell\"\n[runners.kubernetes]\nnamespace = \"a\"\nnamspace = \"b\"\n[runners.cache.s3]\nBucket = \"x\"\n[runners.docker]\nimage = \"x\"\n[runners.feature_flags]\nTIMESTAMPS = true\n"
	cfg, warns, err := Parse([]byte(doc), "/etc/gitlab-runner/config.toml")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if cfg.Runners[0].Kubernetes.Namespace != "a" {
		t.Errorf("known keys next to unknown ones were not decoded: %+v", cfg.Runners[0].Kubernetes)
	}
	var got []string
	for _, w := range warns {
		got = append(got, w.String())
	}
	const unknown = ": unknown key, ignored (check the spelling and the table it is in)"
	want := []string{
		"/etc/gitlab-runner/config.toml:2: concurent" + unknown,
		"/etc/gitlab-runner/config.toml:8: runners[0].executer" + unknown,
		"/etc/gitlab-runner/config.toml:11: runners[0].kubernetes.namspace" + unknown,
		"/etc/gitlab-runner/config.toml:13: runners[0].cache.s3.Bucket" + unknown,
		"/etc/gitlab-runner/config.toml:14: runners[0].docker" + unknown,
		"/etc/gitlab-runner/config.toml:17: runners[0].feature_flags.TIMESTAMPS: feature flag names start with FF_; this one is ignored",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("warnings =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestSaveRoundTripAndMode(t *testing.T) {
	cfg, _, err := Parse([]byte(validDoc), "config.toml")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "sub", "config.toml")
	if err := cfg.Save(path); err != nil {
		t.Fatalf("Save: %v", err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", st.Mode().Perm())
	}
	again, warns, err := Load(path)
	if err != nil || len(warns) != 0 {
		data, _ := os.ReadFile(path)
		t.Fatalf("Load saved: %v %v\n%s", err, warns, data)
	}
	if !reflect.DeepEqual(cfg, again) {
		data, _ := os.ReadFile(path)
		t.Errorf("round trip differs:\n%s", data)
	}
	// An existing file made readable by others is tightened again.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := again.Save(path); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("mode after re-save = %v", st.Mode().Perm())
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
}

func TestLoadMissing(t *testing.T) {
	_, _, err := Load(filepath.Join(t.TempDir(), "none.toml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v, want ErrNotExist", err)
	}
}

func TestShortToken(t *testing.T) {
	tests := map[string]string{
		"glrt-abcdefghijklmnop":    "abcdefghi",
		"glrt-t1_abcdefghijklmnop": "abcdefghi",
		"glrt-t3_abcdefghijk":      "abcdefghi",
		"t2_abcdefghijklmnop":      "abcdefghi",
		"glrtr-abcdefghijklmnop":   "abcdefghi",
		"glcbt-abcdefghijklmnop":   "abcdefghi",
		"GR1348941abcdefghijklmn":  "abcdefghi",
		"GR13489zzabcdefghijklmn":  "GR13489zz",
		"abcdefghijklmnop":         "abcdefghi",
		"short":                    "short",
		"glrt-":                    "",
		"":                         "",
		"t4_abcdefghijk":           "t4_abcdef",
	}
	for in, want := range tests {
		if got := ShortToken(in); got != want {
			t.Errorf("ShortToken(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSystemID(t *testing.T) {
	old := machineIDFiles
	t.Cleanup(func() { machineIDFiles = old })
	dir := t.TempDir()
	mid := filepath.Join(dir, "machine-id")
	os.WriteFile(mid, []byte("0123456789abcdef0123456789abcdef\n"), 0o644)
	machineIDFiles = []string{mid}

	cfgDir := filepath.Join(dir, "cfg")
	id, err := SystemID(cfgDir)
	if err != nil {
		t.Fatal(err)
	}
	if !systemIDRe.MatchString(id) || !strings.HasPrefix(id, "s_") {
		t.Fatalf("id = %q", id)
	}
	// Deterministic for a machine id, persisted, and read back.
	os.Remove(filepath.Join(cfgDir, SystemIDFile))
	id2, _ := SystemID(cfgDir)
	if id2 != id {
		t.Errorf("id for same machine id = %q, want %q", id2, id)
	}
	os.WriteFile(filepath.Join(cfgDir, SystemIDFile), []byte("r_ABCDEFabcdef\n"), 0o600)
	if got, _ := SystemID(cfgDir); got != "r_ABCDEFabcdef" {
		t.Errorf("stored id not used: %q", got)
	}
	// Without a machine id: random r_ id.
	machineIDFiles = []string{filepath.Join(dir, "absent")}
	other := filepath.Join(dir, "other")
	rid, err := SystemID(other)
	if err != nil || !strings.HasPrefix(rid, "r_") || !systemIDRe.MatchString(rid) {
		t.Fatalf("random id = %q, %v", rid, err)
	}
	if st, _ := os.Stat(filepath.Join(other, SystemIDFile)); st.Mode().Perm() != 0o600 {
		t.Errorf("system id file mode = %v", st.Mode().Perm())
	}
}

func TestFindRunner(t *testing.T) {
	c := &Config{Runners: []*Runner{{Name: "a", URL: "https://x", Token: "t1"}, {Name: "b", URL: "https://y", Token: "t2"}}}
	if i := c.FindRunner("b", "", ""); i != 1 {
		t.Errorf("by name = %d", i)
	}
	if i := c.FindRunner("", "https://y/", "t2"); i != 1 {
		t.Errorf("by url+token = %d", i)
	}
	if i := c.FindRunner("a", "https://y", ""); i != -1 {
		t.Errorf("mismatch = %d", i)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(validDoc))
	f.Add([]byte("concurrent = 0\n[[runners]]\nexecutor = 1\n"))
	f.Add([]byte("[[runners]]\n[runners.kubernetes]\nhost_aliases = [{ip=\"x\"}]\n[[runners.kubernetes.volumes.pvc]]\n"))
	f.Add([]byte("a.\"b.c\".d = 1\n[x.'y']\nz = [1, {q = 2}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, _, err := Parse(data, "fuzz.toml")
		if err != nil {
			if cfg != nil {
				t.Fatal("config returned with an error")
			}
			return
		}
		// A valid config must survive a save/parse round trip.
		out, err := cfg.Marshal()
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		if _, _, err := Parse(out, "again.toml"); err != nil {
			t.Fatalf("re-parse of marshaled config failed: %v\n%s", err, out)
		}
	})
}

func TestParseRunnerTemplate(t *testing.T) {
	r, warns, err := ParseRunnerTemplate([]byte("[[runners]]\n  [runners.kubernetes]\n    namespace = \"ci\"\n    image = \"alpine\"\n    bogus = 1\n"), "tpl.toml")
	if err != nil {
		t.Fatalf("template: %v", err)
	}
	if r.Kubernetes.Namespace != "ci" || len(warns) != 1 || warns[0].Line != 5 {
		t.Errorf("template runner = %+v, warnings %v", r.Kubernetes, warns)
	}
	_, _, err = ParseRunnerTemplate([]byte("[[runners]]\nexecutor = \"docker\"\n"), "tpl.toml")
	if err == nil || err.Error() != `tpl.toml:2: runners[0].executor: unknown executor "docker": use "shell" or "kubernetes"` {
		t.Errorf("bad template error = %v", err)
	}
	if r, _, err := ParseRunnerTemplate([]byte("concurrent = 2\n"), "tpl.toml"); r != nil || err != nil {
		t.Errorf("template without runners = %v, %v", r, err)
	}
}

// config's check of a quantity's form agrees with the Kubernetes parser
// the executor uses, except that it refuses the parser's quirks that read
// a number-less suffix or a lone dot as 0 (surely a mistake in config.toml).
func TestQuantityPatternMatchesKubernetes(t *testing.T) {
	for _, q := range []string{"Mi", ".", "k"} {
		if quantityPattern.MatchString(q) {
			t.Errorf("%q accepted", q)
		}
	}
	for _, q := range []string{
		"1", "0", "500m", "0.5", ".5", "5.", "+1", "-1", "512Mi", "2Gi", "1Ki", "3Ei", "1k", "1M", "1G", "1T", "1P", "1E",
		"1e3", "1E-3", "1.5e+2", "100n", "7u", "1GB", "lots", "", " 1", "1 ", "1mi", "1.2.3", "1e", "1Kb", "0x10", "1e3Mi",
	} {
		_, err := resource.ParseQuantity(q)
		if got, want := quantityPattern.MatchString(q), err == nil; got != want {
			t.Errorf("%q: pattern says %v, resource.ParseQuantity %v (%v)", q, got, want, err)
		}
	}
}
