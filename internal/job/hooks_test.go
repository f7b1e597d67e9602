package job

import (
	"strings"
	"testing"
)

func TestGetSourcesHookScripts(t *testing.T) {
	p := testPayload(Step{Name: StepScript, Script: []string{"true"}})
	p.Hooks = []Hook{{Name: "pre_get_sources_script", Script: []string{"echo job-pre"}},
		{Name: "post_get_sources_script", Script: []string{"echo job-post"}}}
	vars, err := BuildVariables(p, RunnerEnv{BuildsDir: "/b", ProjectDir: "/b/p"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		strategy, cfgPre, cfgPost string
		pre, post                 []string // in order; nil: no script
	}{
		{strategy: "clone", cfgPre: "echo cfg-pre", cfgPost: "echo cfg-post",
			pre: []string{"echo cfg-pre", "echo job-pre"}, post: []string{"cd /b/p", "echo job-post", "echo cfg-post"}},
		{strategy: "fetch", pre: []string{"echo job-pre"}, post: []string{"echo job-post"}},
		{strategy: "none"},
	} {
		v := append(Variables{{Key: "GIT_STRATEGY", Value: tc.strategy}}, vars...)
		plan, err := NewPlan(t.Context(), p, v, ScriptOptions{PreGetSourcesScript: tc.cfgPre, PostGetSourcesScript: tc.cfgPost})
		if err != nil {
			t.Fatal(err)
		}
		st := plan.Stages[0]
		check := func(what, script string, want []string) {
			if want == nil {
				if script != "" {
					t.Errorf("%s: %s script must be empty, got %q", tc.strategy, what, script)
				}
				return
			}
			at := 0
			for _, w := range want {
				i := strings.Index(script[at:], w)
				if i < 0 {
					t.Errorf("%s: %s script lacks %q (in order) in %q", tc.strategy, what, w, script)
					return
				}
				at += i + len(w)
			}
			if !strings.Contains(script, "export CI_PROJECT_DIR=") {
				t.Errorf("%s: %s script does not export the variables", tc.strategy, what)
			}
		}
		check("pre", st.PreScript, tc.pre)
		check("post", st.PostScript, tc.post)
		if strings.Contains(st.PreScript, "git ") || strings.Contains(st.PostScript, "git ") {
			t.Errorf("%s: hook scripts must not fetch", tc.strategy)
		}
	}
	if len(p.Hooks[1].Script) != 1 {
		t.Error("the payload's hooks were modified")
	}
}

func TestResolveGitSettings(t *testing.T) {
	p := testPayload(Step{Name: StepScript, Script: []string{"true"}})
	p.GitInfo.Depth = 20
	vars, err := BuildVariables(p, RunnerEnv{BuildsDir: "/b", ProjectDir: "/b/p"})
	if err != nil {
		t.Fatal(err)
	}
	v := append(vars, Variable{Key: "GIT_STRATEGY", Value: "fetch"}, Variable{Key: "GIT_DEPTH", Value: "3"},
		Variable{Key: "GIT_CLEAN_FLAGS", Value: "none"}, Variable{Key: "GIT_SUBMODULE_STRATEGY", Value: "recursive"})
	g, err := ResolveGitSettings(p, v, ScriptOptions{CloneURL: "https://mirror.example.com/base"})
	if err != nil {
		t.Fatal(err)
	}
	if g.Strategy != GitFetch || g.Depth != 3 || g.CleanFlags != nil || g.Submodules != SubmoduleRecursive || !g.Checkout ||
		g.URL != "https://u:p@mirror.example.com/base/.git" || g.Sha != p.GitInfo.Sha || g.Ref != "main" ||
		len(g.Refspecs) != 1 || g.Refspecs[0] != "+refs/heads/main:refs/remotes/origin/main" {
		t.Errorf("%+v", g)
	}
	if _, err := ResolveGitSettings(p, append(vars, Variable{Key: "GIT_STRATEGY", Value: "copy"}), ScriptOptions{}); err == nil {
		t.Error("a bad GIT_STRATEGY must be an error")
	}
}
