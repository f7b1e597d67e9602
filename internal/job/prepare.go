package job

import (
	"context"
	"fmt"
)

// Prepared is a job made ready for an executor: the one place that decides
// its variables, scripts, sources settings (git strategy, depth, clean and
// fetch flags, submodules, CA bundle) and file variables. Every executor
// starts from it, so they cannot drift apart.
type Prepared struct {
	Variables Variables
	Plan      *Plan
	// Git is what the plan's get_sources stage does, for executors that
	// fetch the sources without the git CLI (the in-pod agent).
	Git  *GitSettings
	Mask Mask
	// Files are the file variables: path in the job's environment → content.
	Files map[string]string
}

// Prepare builds a job's variables (BuildVariables), plan (NewPlan) and
// sources settings. Errors name what is wrong with the job or the runner's
// settings. ctx bounds the signing of cache URLs (NewPlan).
func Prepare(ctx context.Context, p *Payload, env RunnerEnv, opts ScriptOptions) (*Prepared, error) {
	vars, err := BuildVariables(p, env)
	if err != nil {
		return nil, err
	}
	plan, err := NewPlan(ctx, p, vars, opts)
	if err != nil {
		return nil, err
	}
	git, err := ResolveGitSettings(p, vars, opts)
	if err != nil {
		return nil, fmt.Errorf("sources settings: %w", err)
	}
	files := map[string]string{}
	x := vars.index()
	for _, v := range vars {
		if v.File {
			files[x.filePath(v.Key)] = v.Value
		}
	}
	return &Prepared{Variables: vars, Plan: plan, Git: git, Mask: MaskFor(p, vars).with(plan.secrets...), Files: files}, nil
}
