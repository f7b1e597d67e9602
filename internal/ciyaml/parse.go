package ciyaml

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// maxTimeout is GitLab's upper bound for a job timeout (one month).
const maxTimeout = 30 * 24 * time.Hour

// maxScriptLines bounds flattened scripts so aliases of aliases cannot
// expand into a huge list.
const maxScriptLines = 100000

// Root keywords. Any other root key is a job (hidden when it starts with
// a dot).
var (
	allowedDefaultKeys = set("after_script", "artifacts", "before_script", "cache", "hooks", "image",
		"interruptible", "retry", "services", "tags", "timeout", "id_tokens", "identity")
	implementedDefaultKeys = set("after_script", "before_script", "image", "services", "tags", "timeout",
		"artifacts", "cache", "retry", "interruptible")

	// Every key GitLab accepts on a job (job, processable and bridge keys).
	allowedJobKeys = set("tags", "script", "image", "services", "start_in", "artifacts", "cache",
		"dependencies", "before_script", "after_script", "hooks", "coverage", "retry", "parallel",
		"timeout", "release", "id_tokens", "publish", "pages", "manual_confirmation", "run",
		"extends", "stage", "only", "except", "rules", "variables", "inherit", "allow_failure",
		"when", "needs", "resource_group", "environment", "interruptible", "identity", "secrets",
		"dast_configuration", "trigger")
	implementedJobKeys = set("tags", "script", "image", "services", "start_in", "before_script",
		"after_script", "timeout", "stage", "variables", "allow_failure", "when", "needs", "dependencies",
		"rules", "only", "except", "extends", "retry", "artifacts", "cache", "parallel", "environment",
		"interruptible", "inherit")

	allowedWhen = []string{WhenOnSuccess, WhenOnFailure, WhenAlways, WhenManual, WhenDelayed}

	imageKeys   = set("name", "entrypoint", "ports", "pull_policy", "docker", "kubernetes")
	serviceKeys = set("name", "entrypoint", "command", "alias", "ports", "variables", "pull_policy", "docker", "kubernetes")

	pullPolicies = set("always", "never", "if-not-present")

	yamlLineRe      = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)
	unknownAnchorRe = regexp.MustCompile(`unknown anchor '([^']*)' referenced`)
)

func set(keys ...string) map[string]bool {
	m := make(map[string]bool, len(keys))
	for _, k := range keys {
		m[k] = true
	}
	return m
}

type parser struct {
	file  string
	opts  ParseOptions
	x     *expander
	errs  ErrorList
	warns []*Error
	// bridges are trigger:/run: jobs, skipped by podrunner; needs on them
	// are dropped.
	bridges map[string]bool
}

// fileOf names the file a node came from (included files keep theirs).
func (p *parser) fileOf(n *yaml.Node) string {
	if p.x != nil {
		if f, ok := p.x.files[n]; ok {
			return f
		}
	}
	return p.file
}

func (p *parser) errorf(n *yaml.Node, format string, args ...any) {
	p.errs = append(p.errs, &Error{File: p.fileOf(n), Pos: posOf(n), Msg: fmt.Sprintf(format, args...)})
}

func (p *parser) warnf(n *yaml.Node, format string, args ...any) {
	p.warns = append(p.warns, &Error{File: p.fileOf(n), Pos: posOf(n), Msg: fmt.Sprintf(format, args...)})
}

// Parse reads a .gitlab-ci.yml. file names the file in messages. The
// returned error is an ErrorList (use errors.As) listing every problem.
// Includes are an error (see ParseWith).
func Parse(file string, data []byte) (*Config, error) {
	return ParseWith(file, data, ParseOptions{})
}

// ParseWith parses like Parse and resolves `include:` through opts. The
// configuration is composed as GitLab does: YAML anchors, aliases and
// merge keys, then includes (deep-merged, the including file wins), then
// `extends`, then `!reference` tags; then every keyword is validated.
func ParseWith(file string, data []byte, opts ParseOptions) (*Config, error) {
	p := &parser{file: file, opts: opts, x: newExpander(), bridges: map[string]bool{}}
	doc, err := p.document(data)
	if err != nil {
		return nil, err
	}
	root, ok := p.compose(doc)
	if !ok {
		return nil, p.sortedErrs()
	}
	cfg := p.root(root)
	if len(p.errs) == 0 {
		p.finish(cfg)
	}
	if len(p.errs) > 0 {
		return nil, p.sortedErrs()
	}
	cfg.Warnings = p.warns
	return cfg, nil
}

func (p *parser) sortedErrs() ErrorList {
	sort.SliceStable(p.errs, func(i, j int) bool {
		a, b := p.errs[i], p.errs[j]
		if a.File != b.File {
			return a.File == p.file // the main file first, then included ones
		}
		return lessPos(a.Pos, b.Pos)
	})
	return p.errs
}

func lessPos(a, b Pos) bool {
	if a.Line != b.Line {
		return a.Line < b.Line
	}
	return a.Col < b.Col
}

// document decodes the YAML and picks the configuration document: the
// only one, or the one after a `spec:` header document.
func (p *parser) document(data []byte) (*yaml.Node, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, ErrorList{{File: p.file, Msg: "Please provide content of .gitlab-ci.yml"}}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []*yaml.Node
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, ErrorList{p.yamlError(err, data)}
		}
		docs = append(docs, &n)
		if len(docs) > 2 {
			break
		}
	}
	if len(docs) == 0 {
		return nil, ErrorList{{File: p.file, Msg: "Please provide content of .gitlab-ci.yml"}}
	}
	doc := docs[0]
	if len(docs) > 1 {
		if h := resolve(docContent(docs[0])); h != nil && h.Kind == yaml.MappingNode && len(h.Content) == 2 && h.Content[0].Value == "spec" {
			doc = docs[1]
		} else {
			return nil, ErrorList{{File: p.file, Pos: posOf(docs[1]), Msg: "Invalid configuration format: only a `spec:` header document may precede the configuration"}}
		}
	}
	root := docContent(doc)
	if isNull(root) {
		return nil, ErrorList{{File: p.file, Msg: "Please provide content of .gitlab-ci.yml"}}
	}
	// GitLab interpolates $[[ inputs.x ]] (spec:inputs, include:inputs,
	// components) before anything else; without it the text would reach
	// scripts and job names as is, so refuse the file instead.
	if n := findInterpolation(root, 0); n != nil {
		return nil, ErrorList{{File: p.file, Pos: posOf(n), Msg: "`$[[ ... ]]` interpolation (spec:inputs, include:inputs, CI/CD components) " +
			"is not supported by podrunner exec: replace it with the values (or variables) for a local run"}}
	}
	if r := resolve(root); r == nil || r.Kind != yaml.MappingNode {
		return nil, ErrorList{{File: p.file, Pos: posOf(root), Msg: "Invalid configuration format"}}
	}
	return root, nil
}

// findInterpolation returns the first key or scalar holding "$[[".
func findInterpolation(n *yaml.Node, depth int) *yaml.Node {
	if n == nil || depth > 100 {
		return nil
	}
	if n.Kind == yaml.ScalarNode && strings.Contains(n.Value, "$[[") {
		return n
	}
	for _, c := range n.Content {
		if f := findInterpolation(c, depth+1); f != nil {
			return f
		}
	}
	return nil
}

// offsetPos converts a byte offset of data to a 1-based line and column.
func offsetPos(data []byte, off int) Pos {
	if off < 0 {
		return Pos{}
	}
	line := 1 + bytes.Count(data[:off], []byte("\n"))
	col := off - bytes.LastIndexByte(data[:off], '\n')
	return Pos{Line: line, Col: col}
}

func docContent(doc *yaml.Node) *yaml.Node {
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return nil
		}
		return doc.Content[0]
	}
	return doc
}

func (p *parser) yamlError(err error, data []byte) *Error {
	msg := err.Error()
	e := &Error{File: p.file, Msg: "Invalid configuration format: " + strings.TrimPrefix(msg, "yaml: ")}
	if m := yamlLineRe.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		e.Pos = Pos{Line: line, Col: 1}
		e.Msg = "Invalid configuration format: " + m[2]
	} else if m := unknownAnchorRe.FindStringSubmatch(msg); m != nil && data != nil {
		e.Pos = offsetPos(data, bytes.Index(data, []byte("*"+m[1])))
	}
	return e
}

func (p *parser) root(root *yaml.Node) *Config {
	cfg := &Config{File: p.file, Root: root}
	pairs, _ := mapping(root)
	keys := map[string]pair{}
	for _, kv := range pairs {
		keys[kv.Key] = kv
	}

	// Stages (types: is their deprecated name).
	stages := DefaultStages
	sk, hasStages := keys["stages"]
	if !hasStages {
		sk, hasStages = keys["types"]
	}
	if hasStages {
		if s, ok := p.stringList(sk.Value); ok {
			stages = s
		} else {
			p.errorf(sk.Value, "%s config should be an array of strings", sk.Key)
		}
	}
	cfg.Stages = append([]string{StagePre}, dedupe(stages, StagePre, StagePost)...)
	cfg.Stages = append(cfg.Stages, StagePost)

	if kv, ok := keys["variables"]; ok {
		cfg.Variables = p.variables("variables", kv.Value, true)
	}
	if kv, ok := keys["workflow"]; ok {
		p.workflow(cfg, kv.Value)
	}

	// default: and the deprecated global forms (default: wins).
	var def Default
	for _, k := range []string{"image", "services", "before_script", "after_script", "cache"} {
		if kv, ok := keys[k]; ok {
			p.defaultKey(&def, k, kv.Value)
		}
	}
	if kv, ok := keys["default"]; ok {
		dps, ok := mapping(kv.Value)
		if !ok {
			p.errorf(kv.Value, "default config should be a hash")
		}
		p.unknownKeys("default", kv.Value, dps, allowedDefaultKeys)
		for _, d := range dps {
			switch {
			case implementedDefaultKeys[d.Key]:
				p.defaultKey(&def, d.Key, d.Value)
			case allowedDefaultKeys[d.Key]:
				p.warnf(d.KeyN, "default:%s is not supported by podrunner and is ignored", d.Key)
			}
		}
	}
	cfg.Default = def

	for _, kv := range pairs {
		switch {
		case rootKeywords[kv.Key]:
			if kv.Key == "spec" || kv.Key == "pages:deploy" {
				p.warnf(kv.KeyN, "%s is not supported by podrunner and is ignored", kv.Key)
			}
		case strings.HasPrefix(kv.Key, "."):
			// Hidden job: a template, never validated by GitLab.
		default:
			if j := p.job(kv, &def); j != nil {
				cfg.Jobs = append(cfg.Jobs, j)
			}
		}
	}

	if len(p.errs) == 0 && len(cfg.Jobs) == 0 && len(p.bridges) == 0 {
		p.errorf(root, "jobs config should contain at least one visible job")
	}
	for _, j := range cfg.Jobs {
		if !contains(cfg.Stages, j.Stage) {
			at := j.Keys["stage"]
			if at == nil { // the default stage "test" is not in stages:
				at = &yaml.Node{Line: j.Pos.Line, Column: j.Pos.Col}
			}
			p.errorf(at, "%s job: chosen stage %s does not exist; available stages are %s",
				j.Name, j.Stage, strings.Join(cfg.Stages, ", "))
		}
	}
	return cfg
}

func (p *parser) workflow(cfg *Config, v *yaml.Node) {
	ps, ok := mapping(v)
	if !ok {
		p.errorf(v, "workflow config should be a hash")
		return
	}
	p.unknownKeys("workflow", v, ps, set("rules", "name", "auto_cancel"))
	for _, kv := range ps {
		switch kv.Key {
		case "rules":
			cfg.Workflow = p.rules("workflow:rules", kv.Value, workflowRuleWhen)
			if cfg.Workflow == nil {
				cfg.Workflow = []Rule{}
			}
		case "name":
			if isScalarValue(kv.Value) {
				cfg.WorkflowName = resolve(kv.Value).Value
			} else {
				p.errorf(kv.Value, "workflow name should be a string")
			}
		case "auto_cancel":
			p.warnf(kv.KeyN, "workflow:auto_cancel is not supported by podrunner and is ignored")
		}
	}
}

func (p *parser) defaultKey(def *Default, key string, v *yaml.Node) {
	path := "default:" + key
	switch key {
	case "image":
		def.Image = p.image(path, v, false)
	case "services":
		def.Services = p.services(path, v)
	case "before_script":
		def.BeforeScript = p.commands(path, v)
	case "after_script":
		def.AfterScript = p.commands(path, v)
	case "tags":
		def.Tags = p.tags(path, v)
	case "timeout":
		def.Timeout = p.timeout("default", v)
	case "artifacts":
		def.Artifacts = p.artifacts("default", v)
	case "cache":
		def.Cache = p.caches("default", v)
	case "retry":
		def.Retry = p.retry("default", v)
	case "interruptible":
		def.Interruptible, _ = p.boolVal("default", "interruptible", v)
	}
}

func (p *parser) unknownKeys(path string, n *yaml.Node, ps []pair, allowed map[string]bool) {
	var unknown []string
	for _, kv := range ps {
		if !allowed[kv.Key] {
			unknown = append(unknown, kv.Key)
		}
	}
	if len(unknown) > 0 {
		at := n
		for _, kv := range ps {
			if kv.Key == unknown[0] {
				at = kv.KeyN
				break
			}
		}
		p.errorf(at, "%s config contains unknown keys: %s", path, strings.Join(unknown, ", "))
	}
}

// inherits reads `inherit:default` (true, false or a list of keys).
func (p *parser) inheritDefault(path string, v *yaml.Node) func(string) bool {
	all := func(string) bool { return true }
	if v == nil {
		return all
	}
	ps, ok := mapping(v)
	if !ok {
		p.errorf(v, "%s:inherit config should be a hash", path)
		return all
	}
	p.unknownKeys(path+":inherit", v, ps, set("default", "variables"))
	for _, kv := range ps {
		r := resolve(kv.Value)
		switch kv.Key {
		case "default":
			if r != nil && r.Tag == "!!bool" {
				var b bool
				_ = r.Decode(&b)
				return func(string) bool { return b }
			}
			l, ok := p.stringList(kv.Value)
			if !ok {
				p.errorf(kv.Value, "%s:inherit default should be a boolean value or an array of strings", path)
				return all
			}
			return func(k string) bool { return contains(l, k) }
		case "variables":
			// Read by inheritVariables.
		}
	}
	return all
}

// inheritVariables reads `inherit:variables`: nil inherits every global
// variable, else only the listed ones (none for false).
func (p *parser) inheritVariables(path string, v *yaml.Node) []string {
	ps, _ := mapping(v)
	for _, kv := range ps {
		if kv.Key != "variables" {
			continue
		}
		if r := resolve(kv.Value); r != nil && r.Tag == "!!bool" {
			if r.Value == "true" || r.Value == "True" || r.Value == "TRUE" {
				return nil
			}
			return []string{}
		}
		l, ok := p.stringList(kv.Value)
		if !ok {
			p.errorf(kv.Value, "%s:inherit variables should be a boolean value or an array of strings", path)
			return nil
		}
		return l
	}
	return nil
}

func (p *parser) job(kv pair, def *Default) *Job {
	name := kv.Key
	path := "jobs:" + name
	ps, ok := mapping(kv.Value)
	has := map[string]*yaml.Node{}
	for _, x := range ps {
		has[x.Key] = x.Value
	}
	if !ok || (has["script"] == nil && has["run"] == nil && has["trigger"] == nil) {
		p.errorf(kv.KeyN, "%s config should implement the script:, run:, or trigger: keyword", path)
		return nil
	}
	p.unknownKeys(path, kv.Value, ps, allowedJobKeys)
	if has["script"] == nil {
		// trigger: (a child or multi-project pipeline) or run: (CI steps).
		p.bridges[name] = true
		p.warnf(kv.KeyN, "%s: trigger: and run: jobs are not supported by podrunner and are skipped", path)
		return nil
	}

	j := &Job{Name: name, Pos: posOf(kv.KeyN), Stage: "test", When: WhenOnSuccess, Keys: has}
	keyNode := map[string]*yaml.Node{}
	for _, x := range ps {
		keyNode[x.Key] = x.KeyN
		if allowedJobKeys[x.Key] && !implementedJobKeys[x.Key] {
			p.warnf(x.KeyN, "%s:%s is not supported by podrunner and is ignored", path, x.Key)
		}
	}
	inherit := p.inheritDefault(path, has["inherit"])
	if v, ok := has["inherit"]; ok {
		j.InheritVariables = p.inheritVariables(path, v)
	}
	if v, ok := has["stage"]; ok {
		if isString(v) {
			j.Stage = resolve(v).Value
		} else {
			p.errorf(v, "%s:stage config should be a string", path)
		}
	}
	if v, ok := has["script"]; ok {
		before := len(p.errs)
		j.Script = p.commands(path+":script", v)
		if len(j.Script) == 0 && len(p.errs) == before {
			p.errorf(v, "%s script can't be blank", path)
		}
	}
	if inherit("before_script") {
		j.BeforeScript = def.BeforeScript
	}
	if v, ok := has["before_script"]; ok {
		j.BeforeScript = p.commands(path+":before_script", v)
	}
	if inherit("after_script") {
		j.AfterScript = def.AfterScript
	}
	if v, ok := has["after_script"]; ok {
		j.AfterScript = p.commands(path+":after_script", v)
	}
	if inherit("image") {
		j.Image = def.Image
	}
	if v, ok := has["image"]; ok {
		j.Image = p.image(path+":image", v, false)
	}
	if inherit("services") {
		j.Services = def.Services
	}
	if v, ok := has["services"]; ok {
		j.Services = p.services(path+":services", v)
	}
	if inherit("tags") {
		j.Tags = def.Tags
	}
	if v, ok := has["tags"]; ok {
		j.Tags = p.tags(path+":tags", v)
	}
	if inherit("timeout") {
		j.Timeout = def.Timeout
	}
	if v, ok := has["timeout"]; ok {
		j.Timeout = p.timeout(path, v)
	}
	if inherit("artifacts") {
		j.Artifacts = def.Artifacts
	}
	if v, ok := has["artifacts"]; ok {
		j.Artifacts = p.artifacts(path, v)
	}
	if inherit("cache") {
		j.Cache = def.Cache
	}
	if v, ok := has["cache"]; ok {
		j.Cache = p.caches(path, v)
	}
	if inherit("retry") && def.Retry != nil {
		j.Retry = *def.Retry
	}
	if v, ok := has["retry"]; ok {
		if r := p.retry(path, v); r != nil {
			j.Retry = *r
		}
	}
	if inherit("interruptible") {
		j.Interruptible = def.Interruptible
	}
	if v, ok := has["interruptible"]; ok {
		j.Interruptible, _ = p.boolVal(path, "interruptible", v)
	}
	if v, ok := has["environment"]; ok {
		p.environment(path, v, j)
	}
	if v, ok := has["variables"]; ok {
		j.Variables = p.variables(path+":variables", v, false)
	}
	if v, ok := has["needs"]; ok {
		j.Needs = p.needs(path, v)
	}
	if v, ok := has["dependencies"]; ok {
		if isNull(v) {
			j.Dependencies = []string{}
		} else if l, ok := p.stringList(v); ok {
			j.Dependencies = l
		} else {
			p.errorf(v, "%s dependencies should be an array of strings", path)
		}
	}
	if v, ok := has["rules"]; ok {
		for _, k := range []string{"only", "except"} {
			if keyNode[k] != nil {
				p.errorf(keyNode[k], "%s config key may not be used with `rules`: %s", path, k)
			}
		}
		j.Rules = p.rules(path+":rules", v, ruleWhen)
	}
	if v, ok := has["only"]; ok {
		j.Only = p.policy(path+":only", v)
	}
	if v, ok := has["except"]; ok {
		j.Except = p.policy(path+":except", v)
	}
	if v, ok := has["parallel"]; ok {
		j.parallel = p.parallel(path, v)
	}
	if v, ok := has["when"]; ok {
		w := resolve(v)
		if isString(w) && contains(allowedWhen, w.Value) {
			j.When = w.Value
		} else {
			p.errorf(v, "%s when should be one of: %s", path, strings.Join(allowedWhen, ", "))
		}
	}
	if v, ok := has["start_in"]; ok {
		if j.When != WhenDelayed && j.Rules == nil {
			p.errorf(keyNode["start_in"], "%s start in must be blank", path)
		} else if d, err := p.duration(v); err != nil {
			p.errorf(v, "%s start in should be a duration", path)
		} else if d > 7*24*time.Hour {
			p.errorf(v, "%s start in should not exceed the limit", path)
		} else {
			j.StartIn = d
		}
	} else if j.When == WhenDelayed {
		p.errorf(keyNode["when"], "%s start in should be a duration", path)
	}
	j.AllowFailure = j.When == WhenManual
	if v, ok := has["allow_failure"]; ok {
		j.allowFailureSet = true
		p.allowFailure(path, v, j)
	}
	return j
}

func (p *parser) allowFailure(path string, v *yaml.Node, j *Job) {
	r := resolve(v)
	if r != nil && r.Kind == yaml.ScalarNode && r.Tag == "!!bool" {
		var b bool
		_ = r.Decode(&b)
		j.AllowFailure = b
		return
	}
	ps, ok := mapping(v)
	if !ok {
		p.errorf(v, "%s:allow_failure config should be a hash or a boolean value", path)
		return
	}
	p.unknownKeys(path+":allow_failure", v, ps, set("exit_codes"))
	j.AllowFailure = false // a hash allows failure only for the listed codes
	for _, kv := range ps {
		if kv.Key != "exit_codes" {
			continue
		}
		codes, ok := p.intList(kv.Value)
		if !ok || len(codes) == 0 {
			p.errorf(kv.Value, "%s:allow_failure exit codes should be an array of integers or an integer", path)
			continue
		}
		j.AllowFailureExitCodes = codes
	}
}

func (p *parser) timeout(path string, v *yaml.Node) time.Duration {
	d, err := p.duration(v)
	if err != nil {
		p.errorf(v, "%s timeout should be a duration", path)
		return 0
	}
	if d > maxTimeout {
		p.errorf(v, "%s timeout should not exceed the limit", path)
		return 0
	}
	return d
}

func (p *parser) duration(v *yaml.Node) (time.Duration, error) {
	if !isScalarValue(v) {
		return 0, fmt.Errorf("not a duration")
	}
	return ParseDuration(resolve(v).Value)
}

// commands flattens a string or nested list of strings (up to 10 levels)
// into script lines.
func (p *parser) commands(path string, v *yaml.Node) []string {
	if isNull(v) {
		return nil
	}
	var out []string
	if !flatten(v, 0, &out) {
		p.errorf(v, "%s config should be a string or a nested array of strings up to 10 levels deep", path)
		return nil
	}
	return out
}

func flatten(v *yaml.Node, depth int, out *[]string) bool {
	r := resolve(v)
	switch {
	case r == nil:
		return false
	case isString(r):
		if len(*out) >= maxScriptLines {
			return false
		}
		*out = append(*out, r.Value)
		return true
	case r.Kind == yaml.SequenceNode:
		if depth >= 10 {
			return false
		}
		for _, c := range r.Content {
			if !flatten(c, depth+1, out) {
				return false
			}
		}
		return true
	}
	return false
}

func (p *parser) tags(path string, v *yaml.Node) []string {
	tags, ok := p.stringList(v)
	if !ok {
		p.errorf(v, "%s config should be an array of strings", path)
		return nil
	}
	if len(tags) > 50 {
		p.errorf(v, "%s config must be less than the limit of 50 tags", path)
	}
	return tags
}

func (p *parser) stringList(v *yaml.Node) ([]string, bool) {
	r := resolve(v)
	if r == nil || r.Kind != yaml.SequenceNode {
		return nil, false
	}
	out := make([]string, 0, len(r.Content))
	for _, c := range r.Content {
		if !isString(c) {
			return nil, false
		}
		out = append(out, resolve(c).Value)
	}
	return out, true
}

func (p *parser) intList(v *yaml.Node) ([]int, bool) {
	r := resolve(v)
	if r == nil {
		return nil, false
	}
	items := []*yaml.Node{r}
	if r.Kind == yaml.SequenceNode {
		items = r.Content
	}
	var out []int
	for _, c := range items {
		c = resolve(c)
		if c == nil || c.Kind != yaml.ScalarNode || c.Tag != "!!int" {
			return nil, false
		}
		var n int
		if err := c.Decode(&n); err != nil {
			return nil, false
		}
		out = append(out, n)
	}
	return out, true
}

func (p *parser) image(path string, v *yaml.Node, service bool) *Image {
	if isString(v) {
		return &Image{Name: resolve(v).Value, Pos: posOf(v)}
	}
	ps, ok := mapping(v)
	if !ok {
		p.errorf(v, "%s config should be a hash or a string", path)
		return nil
	}
	allowed := imageKeys
	if service {
		allowed = serviceKeys
	}
	p.unknownKeys(path, v, ps, allowed)
	img := &Image{Pos: posOf(v)}
	for _, kv := range ps {
		switch kv.Key {
		case "name":
			if isString(kv.Value) {
				img.Name = resolve(kv.Value).Value
			} else {
				p.errorf(kv.Value, "%s name config should be a string", path)
			}
		case "alias":
			if isString(kv.Value) {
				img.Alias = resolve(kv.Value).Value
			} else {
				p.errorf(kv.Value, "%s alias config should be a string", path)
			}
		case "entrypoint", "command":
			l, ok := p.stringList(kv.Value)
			if !ok {
				p.errorf(kv.Value, "%s %s config should be an array of strings", path, kv.Key)
			}
			if kv.Key == "entrypoint" {
				img.Entrypoint = l
			} else {
				img.Command = l
			}
		case "variables":
			img.Variables = p.variables(path+":variables", kv.Value, false)
		case "pull_policy":
			img.PullPolicy = p.pullPolicy(path, kv.Value)
		case "ports", "docker", "kubernetes":
			p.warnf(kv.KeyN, "%s:%s is not supported by podrunner yet and is ignored", path, kv.Key)
		}
	}
	if img.Name == "" {
		p.errorf(v, "%s name can't be blank", path)
	}
	return img
}

func (p *parser) pullPolicy(path string, v *yaml.Node) []string {
	var l []string
	if isString(v) {
		l = []string{resolve(v).Value}
	} else if s, ok := p.stringList(v); ok {
		l = s
	} else {
		p.errorf(v, "%s pull_policy should be a string or an array of strings", path)
		return nil
	}
	for _, s := range l {
		if !pullPolicies[s] {
			p.errorf(v, "%s pull_policy should be always, never or if-not-present", path)
			return nil
		}
	}
	return l
}

func (p *parser) services(path string, v *yaml.Node) []Image {
	r := resolve(v)
	if r == nil || r.Kind != yaml.SequenceNode {
		p.errorf(v, "%s config should be a array", path)
		return nil
	}
	out := make([]Image, 0, len(r.Content))
	for i, c := range r.Content {
		if img := p.image(fmt.Sprintf("%s:service[%d]", path, i), c, true); img != nil {
			out = append(out, *img)
		}
	}
	return out
}

// variables reads `variables:`. Values are strings or numbers, or a hash
// with value (and, globally, description/options) and expand.
func (p *parser) variables(path string, v *yaml.Node, global bool) []Variable {
	if isNull(v) {
		return nil
	}
	ps, ok := mapping(v)
	if !ok {
		p.errorf(v, "%s config should be a hash of key value pairs, value can be a hash", path)
		return nil
	}
	dataKeys := set("value", "expand")
	if global {
		dataKeys = set("value", "expand", "description", "options")
	}
	var out []Variable
	for _, kv := range ps {
		if kn := resolve(kv.KeyN); kn == nil || kn.Kind != yaml.ScalarNode || kv.Key == "" {
			p.errorf(kv.KeyN, "%s config should be a hash of key value pairs, value can be a hash", path)
			continue
		}
		vr := Variable{Key: kv.Key, Expand: true, Pos: posOf(kv.KeyN)}
		switch {
		case isScalarValue(kv.Value):
			vr.Value = resolve(kv.Value).Value
		case isNull(kv.Value):
			// GitLab reads a null value as an empty string.
		default:
			hps, ok := mapping(kv.Value)
			if !ok {
				p.errorf(kv.Value, "%s config should be a hash of key value pairs, value can be a hash", path)
				continue
			}
			var bad []string
			for _, h := range hps {
				if !dataKeys[h.Key] {
					bad = append(bad, h.Key)
					continue
				}
				switch h.Key {
				case "value":
					if !isScalarValue(h.Value) && !isNull(h.Value) {
						p.errorf(h.Value, "%s:%s value should be a string", path, kv.Key)
					} else if !isNull(h.Value) {
						vr.Value = resolve(h.Value).Value
					}
				case "description":
					if isString(h.Value) {
						vr.Description = resolve(h.Value).Value
					} else {
						p.errorf(h.Value, "%s:%s description should be a string", path, kv.Key)
					}
				case "expand":
					r := resolve(h.Value)
					if r == nil || r.Tag != "!!bool" {
						p.errorf(h.Value, "%s:%s expand should be a boolean value", path, kv.Key)
					} else {
						_ = r.Decode(&vr.Expand)
					}
				case "options":
					if _, ok := p.stringList(h.Value); !ok {
						p.errorf(h.Value, "%s:%s options should be an array of strings", path, kv.Key)
					}
				}
			}
			if len(bad) > 0 {
				p.errorf(kv.Value, "%s config uses invalid data keys: %s", path, strings.Join(bad, ", "))
			}
		}
		out = append(out, vr)
	}
	return out
}

func dedupe(in []string, drop ...string) []string {
	seen := map[string]bool{}
	for _, d := range drop {
		seen[d] = true
	}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
