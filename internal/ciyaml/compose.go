package ciyaml

import (
	"fmt"
	"path"
	"strings"

	"go.yaml.in/yaml/v3"
)

// GitLab's limits for composing a configuration.
const (
	maxIncludes      = 150
	maxExtendsLevels = 10 // ancestors of one job (GitLab: 11 levels in all)
	maxRefDepth      = 10
)

// rootKeywords are the root keys that are not jobs.
var rootKeywords = set("default", "stages", "variables", "image", "services", "before_script",
	"after_script", "include", "workflow", "cache", "spec", "types", "pages:deploy")

// compose turns the main document into the final plain tree: includes
// merged, extends applied, !reference tags replaced.
func (p *parser) compose(doc *yaml.Node) (*yaml.Node, bool) {
	root := p.x.copy(doc, 0)
	if p.expandErr(p.file) {
		return nil, false
	}
	n := 0
	root = p.includes(root, p.file, &n)
	if root == nil || len(p.errs) > 0 {
		return nil, false
	}
	if !p.extends(root) || !p.references(root) {
		return nil, false
	}
	return root, true
}

func (p *parser) expandErr(file string) bool {
	if p.x.err == nil {
		return false
	}
	e := *p.x.err
	e.File = file
	p.errs = append(p.errs, &e)
	return true
}

// includes resolves root's `include:` (root is a plain mapping) and
// returns the merged tree: included files in order, the including file
// last (it wins).
func (p *parser) includes(root *yaml.Node, file string, count *int) *yaml.Node {
	m := omapOf(root)
	inc, ok := m.get("include")
	if !ok {
		return root
	}
	var entries []*yaml.Node
	switch inc.Kind {
	case yaml.SequenceNode:
		entries = inc.Content
	case yaml.ScalarNode, yaml.MappingNode:
		entries = []*yaml.Node{inc}
	}
	if isNull(inc) {
		entries = nil
	}
	var merged *yaml.Node
	for _, e := range entries {
		name, ok := p.includeTarget(e)
		if !ok {
			return nil
		}
		if name == "" {
			continue // excluded by include:rules
		}
		// A file may be included several times (GitLab merges it again);
		// every inclusion counts, which also ends include loops.
		*count++
		if *count > maxIncludes {
			p.errorf(e, "Maximum of %d nested includes are allowed!", maxIncludes)
			return nil
		}
		sub := p.includeFile(e, name)
		if sub == nil {
			return nil
		}
		sub = p.includes(sub, name, count)
		if sub == nil {
			return nil
		}
		if merged == nil {
			merged = sub
		} else if merged = p.x.deepMerge(merged, sub); merged == nil {
			p.expandErr(file)
			return nil
		}
	}
	// The including file without its include: key goes on top.
	var own omap
	for i, k := range m.keys {
		if k != "include" {
			own.set(k, m.kn[i], m.vn[i])
		}
	}
	top := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: root.Line, Column: root.Column, Content: own.content()}
	if merged == nil {
		return top
	}
	out := p.x.deepMerge(merged, top)
	if out == nil {
		p.expandErr(file)
	}
	return out
}

// includeTarget returns the repository path of one include entry.
// An empty name with true means include:rules exclude the file.
func (p *parser) includeTarget(e *yaml.Node) (string, bool) {
	var loc, rules *yaml.Node
	switch {
	case isString(e):
		v := e.Value
		if strings.HasPrefix(v, "http://") || strings.HasPrefix(v, "https://") {
			p.errorf(e, "include:remote is not supported by podrunner exec: only files of the same repository (include:local) can be included")
			return "", false
		}
		loc = e
	case e.Kind == yaml.MappingNode:
		ps, _ := mapping(e)
		for _, kv := range ps {
			switch kv.Key {
			case "local":
				loc = kv.Value
			case "remote", "template", "project", "component":
				p.errorf(kv.KeyN, "include:%s is not supported by podrunner exec: only files of the same repository (include:local) can be included", kv.Key)
				return "", false
			case "rules":
				if p.opts.IncludeEnv == nil {
					p.warnf(kv.KeyN, "include:rules are not evaluated here and are ignored (the file is always included)")
					continue
				}
				rules = kv.Value
			case "inputs", "file", "ref", "cache", "integrity":
				if kv.Key == "inputs" {
					p.warnf(kv.KeyN, "include:inputs is not supported by podrunner exec and is ignored")
				}
			default:
				p.errorf(kv.KeyN, "include config contains unknown keys: %s", kv.Key)
				return "", false
			}
		}
		if loc == nil {
			p.errorf(e, "Include config should contain one of: local, remote, template, project, component")
			return "", false
		}
		if !isString(loc) {
			p.errorf(loc, "include:local config should be a string")
			return "", false
		}
	default:
		p.errorf(e, "Include config should be a string or a hash")
		return "", false
	}
	if rules != nil && !p.includeRulesMatch(rules) {
		return "", true
	}
	value := loc.Value
	if strings.Contains(value, "$") {
		if p.opts.IncludeEnv == nil {
			p.warnf(loc, "Included file `%s` names variables, which are only known when the pipeline is created; left out here", value)
			return "", true
		}
		// VariablesExpander: ExpandVariables.expand_existing with the
		// pipeline's variables (not the YAML's); unknown ones stay.
		vars := p.opts.IncludeEnv.Variables
		value = varRefRe.ReplaceAllStringFunc(value, func(m string) string {
			if v, ok := vars[strings.Trim(m, "${}")]; ok && m != "$$" {
				return v
			}
			return m
		})
	}
	name := strings.TrimPrefix(path.Clean("/"+value), "/")
	if name != strings.TrimPrefix(value, "/") {
		// GitLab reads the path as written (a leading "/" aside): no
		// file of the repository is called ./x.yml or a/../x.yml.
		p.errorf(loc, "Local file `%s` does not exist!", value)
		return "", false
	}
	if strings.ContainsAny(name, "*?[") {
		p.errorf(loc, "Included file `%s`: wildcard paths are not supported by podrunner exec; list the files", value)
		return "", false
	}
	if ext := path.Ext(name); ext != ".yml" && ext != ".yaml" {
		p.errorf(loc, "Included file `%s` does not have YAML extension!", value)
		return "", false
	}
	return name, true
}

// includeRulesMatch evaluates include:rules (if, exists, changes, when:
// always or never) in ParseOptions.IncludeEnv.
func (p *parser) includeRulesMatch(v *yaml.Node) bool {
	before := len(p.errs)
	rules := p.rules("include:rules", v, []string{WhenAlways, WhenNever})
	if len(p.errs) > before {
		return false
	}
	env := *p.opts.IncludeEnv
	sc := &scope{env: env.Variables}
	for i := range rules {
		ok, err := ruleMatches(&rules[i], env, sc.lookup)
		if err != nil {
			p.errorf(v, "include:rules: %v", err)
			return false
		}
		if ok {
			return rules[i].When != WhenNever
		}
	}
	return false
}

func (p *parser) includeFile(at *yaml.Node, name string) *yaml.Node {
	if p.opts.ReadFile == nil {
		p.errorf(at, "Local file `%s` does not exist! (includes are not available here)", name)
		return nil
	}
	data, err := p.opts.ReadFile(name)
	if err != nil {
		p.errorf(at, "Local file `%s` does not exist!", name)
		return nil
	}
	sub := &parser{file: name}
	doc, derr := sub.document(data)
	if derr != nil {
		if strings.HasPrefix(derr.Error(), name+": Please provide content") {
			p.errorf(at, "Local file `%s` is empty!", name)
		} else {
			p.errorf(at, "Included file `%s` does not have valid YAML syntax! (%v)", name, derr)
		}
		return nil
	}
	p.x.file = name
	n := p.x.copy(doc, 0)
	p.x.file = ""
	if p.expandErr(name) {
		return nil
	}
	if n == nil || n.Kind != yaml.MappingNode {
		p.errorf(at, "Included file `%s` does not have valid YAML syntax! (the file is not a hash)", name)
		return nil
	}
	return n
}

// extends applies `extends:` to every job and template of root.
func (p *parser) extends(root *yaml.Node) bool {
	m := omapOf(root)
	done := map[string]bool{}
	depth := map[string]int{}
	for i, k := range m.keys {
		if rootKeywords[k] {
			continue
		}
		// The depth check does not depend on the order of the keys.
		if d := chainDepth(m, k, depth, map[string]bool{}); d > maxExtendsLevels+1 {
			ext, _ := omapOf(m.vn[i]).get("extends")
			p.errorf(ext, "%s: nesting too deep in `extends`", k)
			return false
		}
		if !p.extendOne(m, root, i, done, nil) {
			return false
		}
	}
	return true
}

// chainDepth is the length of the longest extends chain above key
// (cycles count as 0 here: extendOne reports them).
func chainDepth(m *omap, key string, memo map[string]int, visiting map[string]bool) int {
	if d, ok := memo[key]; ok {
		return d
	}
	if visiting[key] {
		return 0
	}
	v, ok := m.get(key)
	if !ok || v.Kind != yaml.MappingNode {
		return 0
	}
	ext, ok := omapOf(v).get("extends")
	if !ok {
		memo[key] = 0
		return 0
	}
	var bases []string
	if ext.Kind == yaml.ScalarNode {
		bases = []string{ext.Value}
	} else {
		for _, c := range ext.Content {
			bases = append(bases, c.Value)
		}
	}
	visiting[key] = true
	d := 0
	for _, b := range bases {
		if bd := chainDepth(m, b, memo, visiting) + 1; bd > d {
			d = bd
		}
		if d > maxExtendsLevels+1 {
			break
		}
	}
	delete(visiting, key)
	memo[key] = d
	return d
}

func (p *parser) extendOne(m *omap, root *yaml.Node, i int, done map[string]bool, parents []string) bool {
	key := m.keys[i]
	if done[key] {
		return true
	}
	val := m.vn[i]
	if val.Kind != yaml.MappingNode {
		done[key] = true
		return true
	}
	jm := omapOf(val)
	ext, ok := jm.get("extends")
	if !ok {
		done[key] = true
		return true
	}
	var bases []string
	if isString(ext) {
		bases = []string{ext.Value}
	} else if l, ok := p.stringList(ext); ok {
		bases = l
	} else {
		p.errorf(ext, "jobs:%s extends should be an array of strings or a string", key)
		return false
	}
	if contains(parents, key) {
		p.errorf(ext, "%s: circular dependency detected in `extends`", key)
		return false
	}
	var unknown, invalid []string
	for _, b := range bases {
		bi, ok := m.find(b)
		switch {
		case !ok:
			unknown = append(unknown, b)
		case m.vn[bi].Kind != yaml.MappingNode:
			invalid = append(invalid, b)
		}
	}
	if len(unknown) > 0 {
		p.errorf(ext, "%s: unknown keys in `extends` (%s)", key, strings.Join(unknown, ", "))
		return false
	}
	if len(invalid) > 0 {
		p.errorf(ext, "%s: invalid base hashes in `extends` (%s)", key, strings.Join(invalid, ", "))
		return false
	}
	var acc *yaml.Node
	for _, b := range bases {
		bi, _ := m.find(b)
		if !p.extendOne(m, root, bi, done, append(parents, key)) {
			return false
		}
		if acc == nil {
			acc = m.vn[bi]
		} else if acc = p.x.deepMerge(acc, m.vn[bi]); acc == nil {
			p.expandErr(p.fileOf(val))
			return false
		}
	}
	out := p.x.deepMerge(acc, val)
	if out == nil {
		p.expandErr(p.fileOf(val))
		return false
	}
	m.vn[i] = out
	root.Content[2*i+1] = out
	done[key] = true
	return true
}

// references replaces every `!reference [key, subkey…]` sequence with a
// copy of the value it names (after extends), as GitLab's tag resolver.
func (p *parser) references(root *yaml.Node) bool {
	r := &refResolver{p: p, root: omapOf(root), active: map[string]bool{}}
	r.walk(root, 0)
	return r.ok()
}

type refResolver struct {
	p      *parser
	root   *omap
	active map[string]bool
	failed bool
}

func (r *refResolver) ok() bool { return !r.failed && len(r.p.errs) == 0 }

func (r *refResolver) walk(n *yaml.Node, depth int) {
	if n == nil || r.failed {
		return
	}
	for i, c := range n.Content {
		if c.Tag == "!reference" {
			if out := r.resolve(c, depth); out != nil {
				n.Content[i] = out
			}
			continue
		}
		r.walk(c, depth)
	}
}

func refString(n *yaml.Node) string {
	parts := make([]string, 0, len(n.Content))
	for _, c := range n.Content {
		parts = append(parts, fmt.Sprintf("%q", c.Value))
	}
	return "!reference [" + strings.Join(parts, ", ") + "]"
}

func (r *refResolver) resolve(n *yaml.Node, depth int) *yaml.Node {
	if n.Kind != yaml.SequenceNode || len(n.Content) == 0 {
		r.p.errorf(n, "!reference should be an array of strings")
		r.failed = true
		return nil
	}
	for _, c := range n.Content {
		if c.Kind != yaml.ScalarNode {
			r.p.errorf(n, "!reference should be an array of strings")
			r.failed = true
			return nil
		}
	}
	if depth >= maxRefDepth {
		r.p.errorf(n, "%s: too many nested references (maximum is %d)", refString(n), maxRefDepth)
		r.failed = true
		return nil
	}
	key := refString(n)
	if r.active[key] {
		r.p.errorf(n, "%s is part of a circular chain", refString(n))
		r.failed = true
		return nil
	}
	target, ok := r.root.get(n.Content[0].Value)
	for _, c := range n.Content[1:] {
		if !ok || target.Kind != yaml.MappingNode {
			ok = false
			break
		}
		target, ok = omapOf(target).get(c.Value)
	}
	if !ok {
		r.p.errorf(n, "%s could not be found", refString(n))
		r.failed = true
		return nil
	}
	if target.Tag == "!reference" {
		r.active[key] = true
		out := r.resolve(target, depth+1)
		delete(r.active, key)
		return out
	}
	out := r.p.x.clone(target)
	if out == nil {
		r.p.expandErr(r.p.fileOf(n))
		r.failed = true
		return nil
	}
	r.active[key] = true
	r.walk(out, depth+1)
	delete(r.active, key)
	return out
}
