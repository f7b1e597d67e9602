package ciyaml

import (
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Rule is one entry of `rules:` or `workflow:rules:`. A rule matches when
// all its clauses (If, Changes, Exists) match; a rule without clauses
// always matches.
type Rule struct {
	If *Expr
	// Changes and Exists are nil when the rule has no such clause.
	Changes   []string
	CompareTo string
	Exists    []string
	// When is "" when the rule does not set it (the job's when applies).
	When    string
	StartIn time.Duration
	// AllowFailure and Interruptible are nil when the rule does not set
	// them.
	AllowFailure  *bool
	Interruptible *bool
	Variables     []Variable
	// Needs is nil when the rule does not set `needs:`.
	Needs []Need
	Pos   Pos
}

// Policy is `only:` or `except:`. A policy is satisfied when every clause
// given has at least one entry that matches.
type Policy struct {
	Refs      []string
	Variables []*Expr
	Changes   []string
	// HasRefs … tell given clauses from empty ones.
	HasRefs, HasVariables, HasChanges bool
	Pos                               Pos
}

var (
	ruleKeys         = set("if", "changes", "exists", "when", "start_in", "allow_failure", "variables", "needs", "interruptible", "auto_cancel")
	ruleWhen         = []string{WhenOnSuccess, WhenOnFailure, WhenAlways, WhenManual, WhenDelayed, WhenNever}
	workflowRuleWhen = []string{WhenAlways, WhenNever}
	needKeys         = set("job", "artifacts", "optional", "parallel", "pipeline", "project", "ref")
	retryKeys        = set("max", "when", "exit_codes")
	retryWhen        = set("always", "unknown_failure", "script_failure", "api_failure", "stuck_or_timeout_failure",
		"runner_system_failure", "runner_unsupported", "stale_schedule", "job_execution_timeout", "archived_failure",
		"unmet_prerequisites", "scheduler_failure", "data_integrity_failure")
	artifactsKeys = set("name", "untracked", "paths", "reports", "when", "expire_in", "expose_as", "exclude", "public", "access")
	reportKeys    = set("junit", "coverage_report", "codequality", "sast", "secret_detection", "dependency_scanning",
		"container_scanning", "dast", "license_scanning", "performance", "browser_performance", "load_performance",
		"metrics", "requirements", "requirements_v2", "coverage_fuzzing", "api_fuzzing", "terraform", "accessibility",
		"cluster_image_scanning", "cyclonedx", "annotations", "dotenv", "repository_xray")
	cacheKeys    = set("key", "untracked", "paths", "when", "policy", "fallback_keys", "unprotect")
	cachePolicy  = set("pull", "push", "pull-push")
	artifactWhen = []string{WhenOnSuccess, WhenOnFailure, WhenAlways}
	policyKeys   = set("refs", "variables", "changes", "kubernetes")
	envKeys      = set("name", "url", "action", "on_stop", "auto_stop_in", "kubernetes", "deployment_tier")
)

// WhenNever drops a job (only in rules).
const WhenNever = "never"

func (p *parser) boolVal(path, what string, v *yaml.Node) (bool, bool) {
	r := resolve(v)
	if r == nil || r.Kind != yaml.ScalarNode || r.Tag != "!!bool" {
		p.errorf(v, "%s %s should be a boolean value", path, what)
		return false, false
	}
	var b bool
	_ = r.Decode(&b)
	return b, true
}

// stringOrList accepts a string or an array of strings.
func (p *parser) stringOrList(v *yaml.Node) ([]string, bool) {
	if isString(v) {
		return []string{resolve(v).Value}, true
	}
	return p.stringList(v)
}

// needs reads `needs:` (strings or hashes).
func (p *parser) needs(path string, v *yaml.Node) []Need {
	r := resolve(v)
	if isNull(v) {
		return []Need{}
	}
	// Entry::Needs: a hash (one need) or an array, whose nested arrays
	// (from !reference) are flattened.
	var items []*yaml.Node
	switch {
	case r != nil && r.Kind == yaml.MappingNode:
		items = []*yaml.Node{v}
	case r != nil && r.Kind == yaml.SequenceNode:
		items = flattenSeq(r)
	default:
		p.errorf(v, "%s:needs config can only be a Hash or an Array", path)
		return []Need{}
	}
	if len(items) > 50 {
		p.errorf(v, "%s:needs config has too many entries (maximum 50)", path)
	}
	out := []Need{}
	seen := map[string]bool{}
	for _, c := range items {
		n := Need{Artifacts: true, Pos: posOf(c), file: p.fileOf(c)}
		switch {
		case isString(c):
			n.Job = resolve(c).Value
		case resolve(c) != nil && resolve(c).Kind == yaml.MappingNode:
			ps, _ := mapping(c)
			p.unknownKeys(path+":needs:need", c, ps, needKeys)
			skip := false
			for _, kv := range ps {
				switch kv.Key {
				case "job":
					if isString(kv.Value) {
						n.Job = resolve(kv.Value).Value
					} else {
						p.errorf(kv.Value, "%s:needs:need job should be a string", path)
					}
				case "artifacts":
					n.Artifacts, _ = p.boolVal(path+":needs:need", "artifacts", kv.Value)
				case "optional":
					n.Optional, _ = p.boolVal(path+":needs:need", "optional", kv.Value)
				case "parallel":
					n.matrix = encodeMatrix(p.needMatrix(path, kv.Value))
				case "pipeline", "project":
					skip = true
				}
			}
			if skip {
				p.warnf(c, "%s:needs: needs of another pipeline or project are not supported by podrunner exec and are ignored", path)
				continue
			}
			if n.Job == "" {
				p.errorf(c, "%s:needs:need job can't be blank", path)
				continue
			}
		default:
			p.errorf(c, "%s:needs config can only be a string, a hash or an array", path)
			continue
		}
		if seen[n.Job] && n.matrix == "" {
			p.errorf(c, "%s has the following needs duplicated: %s.", strings.TrimPrefix(path, "jobs:"), n.Job)
			continue
		}
		seen[n.Job] = true
		out = append(out, n)
	}
	return out
}

func (p *parser) needMatrix(path string, v *yaml.Node) []map[string][]string {
	ps, ok := mapping(v)
	var mv *yaml.Node
	for _, kv := range ps {
		if kv.Key == "matrix" {
			mv = kv.Value
		}
	}
	if !ok || mv == nil {
		p.errorf(v, "%s:needs:need:parallel config should be a hash with a matrix", path)
		return nil
	}
	m, _ := p.matrix(path+":needs:need:parallel", mv)
	return m
}

// matrix reads parallel:matrix: a list of hashes of VAR: value or list.
func (p *parser) matrix(path string, v *yaml.Node) ([]map[string][]string, [][]string) {
	r := resolve(v)
	if r == nil || r.Kind != yaml.SequenceNode || len(r.Content) == 0 {
		p.errorf(v, "%s:matrix config should be an array of hashes", path)
		return nil, nil
	}
	var out []map[string][]string
	var orders [][]string
	for _, c := range r.Content {
		ps, ok := mapping(c)
		if !ok || len(ps) == 0 {
			p.errorf(c, "%s:matrix config should be an array of hashes", path)
			return nil, nil
		}
		m := map[string][]string{}
		var order []string
		for _, kv := range ps {
			var vals []string
			if isScalarValue(kv.Value) {
				vals = []string{resolve(kv.Value).Value}
			} else if rv := resolve(kv.Value); rv != nil && rv.Kind == yaml.SequenceNode && len(rv.Content) > 0 {
				for _, e := range rv.Content {
					if !isScalarValue(e) {
						p.errorf(e, "%s:matrix:variables config should be a hash of key value pairs, value can be an array", path)
						return nil, nil
					}
					vals = append(vals, resolve(e).Value)
				}
			} else {
				p.errorf(kv.Value, "%s:matrix:variables config should be a hash of key value pairs, value can be an array", path)
				return nil, nil
			}
			m[kv.Key] = vals
			order = append(order, kv.Key)
		}
		out = append(out, m)
		orders = append(orders, order)
	}
	return out, orders
}

func (p *parser) retry(path string, v *yaml.Node) *Retry {
	r := resolve(v)
	if r != nil && r.Kind == yaml.ScalarNode && r.Tag == "!!int" {
		n, err := strconv.Atoi(r.Value)
		if err != nil || n < 0 || n > 2 {
			p.errorf(v, "%s:retry config must be between 0 and 2", path)
			return nil
		}
		return &Retry{Max: n}
	}
	ps, ok := mapping(v)
	if !ok {
		p.errorf(v, "%s:retry config has to be either an integer or a hash", path)
		return nil
	}
	p.unknownKeys(path+":retry", v, ps, retryKeys)
	out := &Retry{}
	for _, kv := range ps {
		switch kv.Key {
		case "max":
			rv := resolve(kv.Value)
			n, err := 0, error(nil)
			if rv == nil || rv.Tag != "!!int" {
				err = strconv.ErrSyntax
			} else {
				n, err = strconv.Atoi(rv.Value)
			}
			if err != nil || n < 0 || n > 2 {
				p.errorf(kv.Value, "%s:retry max must be between 0 and 2", path)
				continue
			}
			out.Max = n
		case "when":
			l, ok := p.stringOrList(kv.Value)
			if !ok {
				p.errorf(kv.Value, "%s:retry when should be an array of strings or a string", path)
				continue
			}
			var bad []string
			for _, w := range l {
				if !retryWhen[w] {
					bad = append(bad, w)
				}
			}
			if len(bad) > 0 {
				p.errorf(kv.Value, "%s:retry when contains unknown values: %s", path, strings.Join(bad, ", "))
				continue
			}
			out.When = l
		case "exit_codes":
			codes, ok := p.intList(kv.Value)
			if !ok {
				p.errorf(kv.Value, "%s:retry exit_codes should be an array of integers or an integer", path)
				continue
			}
			out.ExitCodes = codes
		}
	}
	return out
}

func (p *parser) artifacts(path string, v *yaml.Node) *Artifacts {
	path += ":artifacts"
	if isNull(v) {
		return nil
	}
	ps, ok := mapping(v)
	if !ok {
		p.errorf(v, "%s config should be a hash", path)
		return nil
	}
	p.unknownKeys(path, v, ps, artifactsKeys)
	a := &Artifacts{When: WhenOnSuccess, Pos: posOf(v)}
	for _, kv := range ps {
		switch kv.Key {
		case "name":
			if isScalarValue(kv.Value) {
				a.Name = resolve(kv.Value).Value
			} else {
				p.errorf(kv.Value, "%s name should be a string", path)
			}
		case "paths", "exclude":
			l, ok := p.stringList(kv.Value)
			if !ok {
				p.errorf(kv.Value, "%s %s should be an array of strings", path, kv.Key)
			}
			if kv.Key == "paths" {
				a.Paths = l
			} else {
				a.Exclude = l
			}
		case "untracked":
			a.Untracked, _ = p.boolVal(path, "untracked", kv.Value)
		case "when":
			if w := resolve(kv.Value); isString(w) && contains(artifactWhen, w.Value) {
				a.When = w.Value
			} else {
				p.errorf(kv.Value, "%s when should be on_success, on_failure or always", path)
			}
		case "expire_in":
			if !isScalarValue(kv.Value) {
				p.errorf(kv.Value, "%s expire in should be a duration", path)
				continue
			}
			s := resolve(kv.Value).Value
			if s != "never" {
				if _, err := ParseDuration(s); err != nil {
					p.errorf(kv.Value, "%s expire in should be a duration", path)
					continue
				}
			}
			a.ExpireIn = s
		case "reports":
			rps, ok := mapping(kv.Value)
			if !ok {
				p.errorf(kv.Value, "%s:reports config should be a hash", path)
				continue
			}
			p.unknownKeys(path+":reports", kv.Value, rps, reportKeys)
			a.Reports = map[string][]string{}
			for _, r := range rps {
				if !reportKeys[r.Key] {
					continue
				}
				if r.Key == "coverage_report" {
					p.warnf(r.KeyN, "%s:reports:coverage_report is not supported by podrunner exec and is ignored", path)
					continue
				}
				l, ok := p.stringOrList(r.Value)
				if !ok {
					p.errorf(r.Value, "%s:reports %s should be a string or an array of strings", path, r.Key)
					continue
				}
				a.Reports[r.Key] = l
			}
		case "expose_as", "public", "access":
			p.warnf(kv.KeyN, "%s:%s is not supported by podrunner exec and is ignored", path, kv.Key)
		}
	}
	return a
}

func (p *parser) caches(path string, v *yaml.Node) []Cache {
	path += ":cache"
	if isNull(v) {
		return []Cache{}
	}
	r := resolve(v)
	items := []*yaml.Node{v}
	if r != nil && r.Kind == yaml.SequenceNode {
		items = r.Content
		if len(items) > 4 {
			p.errorf(v, "%s config no more than 4 caches can be created", path)
			return nil
		}
	}
	out := []Cache{}
	for _, c := range items {
		if isNull(c) {
			continue
		}
		ps, ok := mapping(c)
		if !ok {
			p.errorf(c, "%s config should be a hash", path)
			continue
		}
		p.unknownKeys(path, c, ps, cacheKeys)
		ca := Cache{Key: "default", Policy: "pull-push", When: WhenOnSuccess, Pos: posOf(c)}
		for _, kv := range ps {
			switch kv.Key {
			case "key":
				p.cacheKey(path, kv.Value, &ca)
			case "paths":
				l, ok := p.stringList(kv.Value)
				if !ok {
					p.errorf(kv.Value, "%s:paths config should be an array of strings", path)
				}
				ca.Paths = l
			case "untracked":
				ca.Untracked, _ = p.boolVal(path, "untracked", kv.Value)
			case "unprotect":
				ca.Unprotect, _ = p.boolVal(path, "unprotect", kv.Value)
			case "policy":
				s := resolve(kv.Value)
				if !isString(s) || (!cachePolicy[s.Value] && !strings.Contains(s.Value, "$")) {
					p.errorf(kv.Value, "%s policy should be pull-push, push, or pull", path)
					continue
				}
				ca.Policy = s.Value
			case "when":
				if w := resolve(kv.Value); isString(w) && contains(artifactWhen, w.Value) {
					ca.When = w.Value
				} else {
					p.errorf(kv.Value, "%s when should be on_success, on_failure or always", path)
				}
			case "fallback_keys":
				l, ok := p.stringList(kv.Value)
				if !ok {
					p.errorf(kv.Value, "%s:fallback_keys config should be an array of strings", path)
				}
				ca.FallbackKeys = l
			}
		}
		out = append(out, ca)
	}
	return out
}

func (p *parser) cacheKey(path string, v *yaml.Node, ca *Cache) {
	if isScalarValue(v) {
		k := resolve(v).Value
		switch {
		case strings.Contains(k, "/") || strings.Contains(k, "%2F") || strings.Contains(k, "%2f"):
			p.errorf(v, "%s:key config cannot contain the \"/\" character", path)
		case k == "." || k == "%2E" || k == "%2e":
			p.errorf(v, "%s:key config cannot be \".\" or \"%%2E\"", path)
		default:
			ca.Key = k
		}
		return
	}
	ps, ok := mapping(v)
	if !ok {
		p.errorf(v, "%s:key config should be a hash, a string or a symbol", path)
		return
	}
	p.unknownKeys(path+":key", v, ps, set("files", "prefix", "files_commits"))
	hasFiles := false
	for _, kv := range ps {
		switch kv.Key {
		case "files", "files_commits":
			hasFiles = true
			l, ok := p.stringList(kv.Value)
			if !ok || len(l) == 0 || len(l) > 2 {
				p.errorf(kv.Value, "%s:key:files config has to be an array of one or two file paths", path)
				continue
			}
			ca.KeyFiles = l
		case "prefix":
			if isScalarValue(kv.Value) {
				ca.KeyPrefix = resolve(kv.Value).Value
			} else {
				p.errorf(kv.Value, "%s:key:prefix config should be a string or symbol", path)
			}
		}
	}
	if !hasFiles {
		p.errorf(v, "%s:key config missing required keys: files", path)
	}
	ca.Key = ""
}

func (p *parser) environment(path string, v *yaml.Node, j *Job) {
	if isString(v) {
		j.Environment = resolve(v).Value
		return
	}
	ps, ok := mapping(v)
	if !ok {
		p.errorf(v, "%s:environment config should be a hash or a string", path)
		return
	}
	p.unknownKeys(path+":environment", v, ps, envKeys)
	named := false
	for _, kv := range ps {
		val := resolve(kv.Value)
		switch kv.Key {
		case "name":
			named = true
			if !isString(kv.Value) {
				p.errorf(kv.Value, "%s:environment name should be a string", path)
				continue
			}
			j.Environment = val.Value
		case "url":
			if !isString(kv.Value) {
				p.errorf(kv.Value, "%s:environment url should be a string", path)
				continue
			}
			j.EnvironmentURL = val.Value
		case "action":
			// Entry::Environment: ALLOWED_ACTIONS.
			switch a := val.Value; a {
			case "start", "stop", "prepare", "verify", "access":
				j.EnvironmentAction = a
			default:
				p.errorf(kv.Value, "%s:environment action should be start, stop, prepare, verify, or access", path)
			}
		case "deployment_tier":
			switch t := val.Value; t {
			case "production", "staging", "testing", "development", "other":
				j.EnvironmentTier = t
			default:
				p.errorf(kv.Value, "%s:environment deployment tier must be one of production, staging, testing, development, other", path)
			}
		}
	}
	if !named {
		p.errorf(v, "%s:environment name can't be blank", path)
	}
}

// expression parses an `if:` or `only: variables` entry.
func (p *parser) expression(path string, v *yaml.Node) *Expr {
	if !isString(v) {
		p.errorf(v, "%s should be a string", path)
		return nil
	}
	e, err := ParseExpression(resolve(v).Value)
	if err != nil {
		p.errorf(v, "%s invalid expression syntax (%v)", path, err)
		return nil
	}
	return e
}

// flattenSeq is a sequence's items with nested sequences (from !reference)
// flattened at any depth, as GitLab flattens rules and needs.
func flattenSeq(seq *yaml.Node) []*yaml.Node {
	var out []*yaml.Node
	for _, c := range seq.Content {
		if rc := resolve(c); rc != nil && rc.Kind == yaml.SequenceNode {
			out = append(out, flattenSeq(rc)...)
		} else {
			out = append(out, c)
		}
	}
	return out
}

// rules reads `rules:`; nested lists (from !reference) are flattened.
func (p *parser) rules(path string, v *yaml.Node, allowedWhen []string) []Rule {
	r := resolve(v)
	if r == nil || r.Kind != yaml.SequenceNode {
		p.errorf(v, "%s config should be an array of hashes", path)
		return nil
	}
	// Entry::Rules: present (`rules: []` is an error), nested arrays from
	// !reference flattened at any depth.
	items := flattenSeq(r)
	if len(r.Content) == 0 {
		p.errorf(v, "%s config can't be blank", path)
		return nil
	}
	out := []Rule{}
	rpath := path + ":rule"
	for _, c := range items {
		ps, ok := mapping(c)
		if !ok {
			p.errorf(c, "%s config should be a hash", rpath)
			continue
		}
		p.unknownKeys(rpath, c, ps, ruleKeys)
		ru := Rule{Pos: posOf(c)}
		for _, kv := range ps {
			switch kv.Key {
			case "if":
				ru.If = p.expression(rpath+" if", kv.Value)
			case "changes":
				ru.Changes, ru.CompareTo = p.changes(rpath+":changes", kv.Value)
			case "exists":
				ru.Exists = p.exists(rpath+":exists", kv.Value)
			case "when":
				if w := resolve(kv.Value); isString(w) && contains(allowedWhen, w.Value) {
					ru.When = w.Value
				} else {
					p.errorf(kv.Value, "%s when unknown value: %s", rpath, resolve(kv.Value).Value)
				}
			case "start_in":
				d, err := p.duration(kv.Value)
				if err != nil || d > 7*24*time.Hour {
					p.errorf(kv.Value, "%s start in should be a duration", rpath)
				}
				ru.StartIn = d
			case "allow_failure":
				if b, ok := p.boolVal(rpath, "allow_failure", kv.Value); ok {
					ru.AllowFailure = &b
				}
			case "interruptible":
				if b, ok := p.boolVal(rpath, "interruptible", kv.Value); ok {
					ru.Interruptible = &b
				}
			case "variables":
				ru.Variables = p.variables(rpath+":variables", kv.Value, false)
			case "needs":
				ru.Needs = p.needs(rpath, kv.Value)
			}
		}
		if ru.When == WhenDelayed && ru.StartIn == 0 {
			p.errorf(c, "%s start in should be a duration", rpath)
		}
		out = append(out, ru)
	}
	return out
}

func (p *parser) changes(path string, v *yaml.Node) ([]string, string) {
	if l, ok := p.stringList(v); ok {
		return l, ""
	}
	ps, ok := mapping(v)
	if !ok {
		p.errorf(v, "%s config should be an array of strings or a hash", path)
		return nil, ""
	}
	p.unknownKeys(path, v, ps, set("paths", "compare_to"))
	var paths []string
	var cmp string
	for _, kv := range ps {
		switch kv.Key {
		case "paths":
			l, ok := p.stringList(kv.Value)
			if !ok {
				p.errorf(kv.Value, "%s paths should be an array of strings", path)
			}
			paths = l
		case "compare_to":
			if isString(kv.Value) {
				cmp = resolve(kv.Value).Value
			} else {
				p.errorf(kv.Value, "%s compare to should be a string", path)
			}
		}
	}
	if paths == nil {
		p.errorf(v, "%s paths can't be blank", path)
		paths = []string{}
	}
	return paths, cmp
}

func (p *parser) exists(path string, v *yaml.Node) []string {
	if l, ok := p.stringList(v); ok {
		return l
	}
	ps, ok := mapping(v)
	if !ok {
		p.errorf(v, "%s config should be an array of strings or a hash", path)
		return nil
	}
	p.unknownKeys(path, v, ps, set("paths", "project", "ref"))
	for _, kv := range ps {
		switch kv.Key {
		case "paths":
			l, ok := p.stringList(kv.Value)
			if !ok {
				p.errorf(kv.Value, "%s paths should be an array of strings", path)
			}
			return l
		case "project", "ref":
			p.warnf(kv.KeyN, "%s:%s is not supported by podrunner exec and is ignored", path, kv.Key)
		}
	}
	p.errorf(v, "%s paths can't be blank", path)
	return []string{}
}

// policy reads `only:` or `except:`.
func (p *parser) policy(path string, v *yaml.Node) *Policy {
	pol := &Policy{Pos: posOf(v)}
	if l, ok := p.stringOrList(v); ok {
		pol.Refs, pol.HasRefs = l, true
		p.checkRefs(path, v, l)
		return pol
	}
	ps, ok := mapping(v)
	if !ok {
		p.errorf(v, "%s config should be an array of strings or a hash", path)
		return nil
	}
	p.unknownKeys(path, v, ps, policyKeys)
	for _, kv := range ps {
		switch kv.Key {
		case "refs":
			l, ok := p.stringOrList(kv.Value)
			if !ok {
				p.errorf(kv.Value, "%s:refs config should be an array of strings or regular expressions", path)
				continue
			}
			p.checkRefs(path+":refs", kv.Value, l)
			pol.Refs, pol.HasRefs = l, true
		case "variables":
			l, ok := p.stringOrList(kv.Value)
			if !ok {
				p.errorf(kv.Value, "%s:variables config should be an array of strings", path)
				continue
			}
			pol.HasVariables = true
			items := []*yaml.Node{kv.Value}
			if r := resolve(kv.Value); r.Kind == yaml.SequenceNode {
				items = r.Content
			}
			for i := range l {
				if e := p.expression(path+":variables config", items[i]); e != nil {
					pol.Variables = append(pol.Variables, e)
				}
			}
		case "changes":
			l, _ := p.changes(path+":changes", kv.Value)
			pol.Changes, pol.HasChanges = l, true
		case "kubernetes":
			p.warnf(kv.KeyN, "%s:kubernetes is not supported by podrunner exec and is ignored", path)
		}
	}
	return pol
}

func (p *parser) checkRefs(path string, v *yaml.Node, refs []string) {
	for _, r := range refs {
		if strings.HasPrefix(r, "/") {
			if patternFromString(strings.SplitN(r, "@", 2)[0]) == nil && patternFromString(r) == nil {
				p.errorf(v, "%s config should be an array of strings or regular expressions", path)
				return
			}
		}
	}
}
