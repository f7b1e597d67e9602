package ciyaml

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// maxParallel is GitLab's limit of jobs from one `parallel:`.
const maxParallel = 200

type parallelSpec struct {
	total  int
	matrix []map[string][]string
	orders [][]string
}

func (p *parser) parallel(path string, v *yaml.Node) *parallelSpec {
	path += ":parallel"
	r := resolve(v)
	if r != nil && r.Kind == yaml.ScalarNode && r.Tag == "!!int" {
		var n int
		if err := r.Decode(&n); err != nil || n < 1 {
			p.errorf(v, "%s config must be greater than or equal to 1", path)
			return nil
		}
		if n > maxParallel {
			p.errorf(v, "%s config must be less than or equal to %d", path, maxParallel)
			return nil
		}
		return &parallelSpec{total: n}
	}
	ps, ok := mapping(v)
	if !ok {
		p.errorf(v, "%s config should be an integer or a hash", path)
		return nil
	}
	p.unknownKeys(path, v, ps, set("matrix"))
	for _, kv := range ps {
		if kv.Key != "matrix" {
			continue
		}
		m, orders := p.matrix(path, kv.Value)
		if m == nil {
			return nil
		}
		total := 0
		for i, e := range m {
			n := 1
			for _, k := range orders[i] {
				n *= len(e[k])
				if n > maxParallel {
					break
				}
			}
			total += n
			if total > maxParallel {
				p.errorf(kv.Value, "%s:matrix config generates too many jobs (maximum is %d)", path, maxParallel)
				return nil
			}
		}
		return &parallelSpec{total: total, matrix: m, orders: orders}
	}
	p.errorf(v, "%s config missing required keys: matrix", path)
	return nil
}

// instance is one job of a parallel expansion.
type instance struct {
	name string
	vars [][2]string // matrix variables in order
}

func (s *parallelSpec) instances(name string) []instance {
	if s.matrix == nil {
		out := make([]instance, s.total)
		for i := range out {
			out[i].name = fmt.Sprintf("%s %d/%d", name, i+1, s.total)
		}
		return out
	}
	var out []instance
	for i, e := range s.matrix {
		combos := [][][2]string{{}}
		for _, k := range s.orders[i] {
			var next [][][2]string
			for _, c := range combos {
				for _, v := range e[k] {
					nc := append(append([][2]string{}, c...), [2]string{k, v})
					next = append(next, nc)
				}
			}
			combos = next
		}
		for _, c := range combos {
			vals := make([]string, len(c))
			for i, kv := range c {
				vals[i] = kv[1]
			}
			out = append(out, instance{name: fmt.Sprintf("%s: [%s]", name, strings.Join(vals, ", ")), vars: c})
		}
	}
	return out
}

// finish expands parallel jobs and validates needs and dependencies
// against the whole job list, as GitLab's YAML processor does.
func (p *parser) finish(cfg *Config) {
	// Expand parallel: jobs.
	expanded := map[string][]*Job{} // base name → instances
	var jobs []*Job
	for _, j := range cfg.Jobs {
		if j.parallel == nil {
			jobs = append(jobs, j)
			continue
		}
		insts := j.parallel.instances(j.Name)
		for i, in := range insts {
			c := *j
			c.Name = in.name
			c.ParallelOf = j.Name
			c.NodeIndex, c.NodeTotal = i+1, len(insts)
			c.Variables = append([]Variable(nil), j.Variables...)
			c.matrixVars = map[string]string{}
			for _, kv := range in.vars {
				c.Variables = append(c.Variables, Variable{Key: kv[0], Value: kv[1], Expand: true, Pos: j.Pos})
				c.matrixVars[kv[0]] = kv[1]
			}
			c.parallel = nil
			c.Rules = append([]Rule(nil), j.Rules...) // resolved per instance below
			jobs = append(jobs, &c)
			expanded[j.Name] = append(expanded[j.Name], &c)
		}
	}
	cfg.Jobs = jobs
	byName := map[string]*Job{}
	for _, j := range jobs {
		byName[j.Name] = j
	}
	stageIdx := func(j *Job) int {
		for i, s := range cfg.Stages {
			if s == j.Stage {
				return i
			}
		}
		return -1
	}
	for _, j := range jobs {
		path := "jobs:" + j.Name
		j.Needs = p.resolveNeeds(path, j, j.Needs, byName, expanded, stageIdx)
		for i := range j.Rules {
			if j.Rules[i].Needs != nil {
				j.Rules[i].Needs = p.resolveNeeds(path, j, j.Rules[i].Needs, byName, expanded, stageIdx)
			}
		}
		if j.Dependencies != nil {
			var deps []string
			for _, d := range j.Dependencies {
				names := []string{d}
				if ins, ok := expanded[d]; ok && byName[d] == nil {
					names = names[:0]
					for _, in := range ins {
						names = append(names, in.Name)
					}
				}
				for _, n := range names {
					t := byName[n]
					if t == nil {
						if p.bridges[n] {
							continue
						}
						p.errorf(j.Keys["dependencies"], "%s job: undefined dependency: %s", path, d)
						continue
					}
					inNeeds := false
					for _, nd := range j.Needs {
						inNeeds = inNeeds || nd.Job == n
					}
					// Entry::Job checks dependencies against needs only when
					// needs are present: `needs: []` with dependencies is valid.
					if len(j.Needs) > 0 && !inNeeds {
						p.errorf(j.Keys["dependencies"], "%s dependencies the %s should be part of needs", path, d)
						continue
					}
					if stageIdx(t) > stageIdx(j) || (stageIdx(t) == stageIdx(j) && !inNeeds) {
						p.errorf(j.Keys["dependencies"], "%s job: dependency %s is not defined in prior stages", path, d)
						continue
					}
					deps = append(deps, n)
				}
			}
			j.Dependencies = append([]string{}, deps...)
		}
	}
	if len(p.errs) == 0 {
		p.checkCycles(jobs, byName)
	}
}

func (p *parser) resolveNeeds(path string, j *Job, needs []Need, byName map[string]*Job, expanded map[string][]*Job, stageIdx func(*Job) int) []Need {
	if needs == nil {
		return nil
	}
	out := []Need{}
	for _, n := range needs {
		var targets []string
		if n.matrix != "" {
			// GitLab's Normalizer turns needs:parallel:matrix into one node
			// name per combination, which must name an instance exactly
			// (all its matrix variables; a partial selector names none);
			// an optional one that names nothing is dropped.
			for _, sel := range matrixSelectors(n.matrix) {
				var hit *Job
				for _, in := range expanded[n.Job] {
					if maps.Equal(in.matrixVars, sel) {
						hit = in
					}
				}
				switch {
				case hit != nil:
					targets = append(targets, hit.Name)
				case !n.Optional:
					p.needErr(n, "%s job: undefined need: %s", path, selectorName(n.Job, sel))
				}
			}
			if len(targets) == 0 {
				continue
			}
		} else if ins, ok := expanded[n.Job]; ok && byName[n.Job] == nil {
			for _, in := range ins {
				targets = append(targets, in.Name)
			}
		} else {
			targets = []string{n.Job}
		}
		for _, name := range targets {
			t := byName[name]
			if t == nil {
				if p.bridges[name] {
					p.warns = append(p.warns, &Error{File: n.file, Pos: n.Pos, Msg: fmt.Sprintf("%s: need %s is a trigger: or run: job, skipped by podrunner; the need is ignored", path, name)})
					continue
				}
				if n.Optional {
					out = append(out, Need{Job: name, Artifacts: n.Artifacts, Optional: true, Pos: n.Pos, file: n.file})
					continue
				}
				p.needErr(n, "%s job: undefined need: %s", path, name)
				continue
			}
			if stageIdx(t) > stageIdx(j) {
				p.needErr(n, "%s job: need %s is not defined in current or prior stages", path, name)
				continue
			}
			out = append(out, Need{Job: name, Artifacts: n.Artifacts, Optional: n.Optional, Pos: n.Pos, file: n.file})
		}
	}
	return out
}

// needErr reports a problem of one need, in the need's file.
func (p *parser) needErr(n Need, format string, args ...any) {
	p.errs = append(p.errs, &Error{File: n.file, Pos: n.Pos, Msg: fmt.Sprintf(format, args...)})
}

// encodeMatrix keeps needs:parallel:matrix in a comparable Need.
func encodeMatrix(m []map[string][]string) string {
	if m == nil {
		return ""
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// matrixSelectors expands an encoded needs:parallel:matrix into one
// variable set per combination of its values.
func matrixSelectors(enc string) []map[string]string {
	var m []map[string][]string
	if json.Unmarshal([]byte(enc), &m) != nil {
		return nil
	}
	var out []map[string]string
	for _, e := range m {
		combos := []map[string]string{{}}
		for _, k := range slices.Sorted(maps.Keys(e)) {
			var next []map[string]string
			for _, c := range combos {
				for _, v := range e[k] {
					nc := maps.Clone(c)
					nc[k] = v
					next = append(next, nc)
				}
			}
			combos = next
		}
		out = append(out, combos...)
	}
	return out
}

// selectorName is the node name GitLab gives a matrix need: "build: [a, b]".
func selectorName(job string, sel map[string]string) string {
	var vals []string
	for _, k := range slices.Sorted(maps.Keys(sel)) {
		vals = append(vals, sel[k])
	}
	return job + ": [" + strings.Join(vals, ", ") + "]"
}

// checkCycles rejects needs that form a loop (possible within a stage).
func (p *parser) checkCycles(jobs []*Job, byName map[string]*Job) {
	const (
		white = iota
		grey
		black
	)
	color := map[string]int{}
	var visit func(j *Job) bool
	visit = func(j *Job) bool {
		color[j.Name] = grey
		for _, n := range j.Needs {
			t := byName[n.Job]
			if t == nil {
				continue
			}
			switch color[t.Name] {
			case grey:
				return false
			case white:
				if !visit(t) {
					return false
				}
			}
		}
		color[j.Name] = black
		return true
	}
	names := make([]string, 0, len(jobs))
	for _, j := range jobs {
		names = append(names, j.Name)
	}
	sort.Strings(names)
	for _, j := range jobs {
		if color[j.Name] == white && !visit(j) {
			p.errorf(j.Keys["needs"], "The pipeline has circular dependencies")
			return
		}
	}
}
