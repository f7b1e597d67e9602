package ciyaml

import (
	"fmt"

	"go.yaml.in/yaml/v3"
)

// maxNodes bounds the size of the configuration after aliases, merge
// keys, includes, extends and !reference are expanded: a "billion laughs"
// document must fail fast instead of exhausting memory.
const maxNodes = 300000

// maxCopyDepth bounds nesting while copying (aliases that refer to
// themselves, absurdly nested documents).
const maxCopyDepth = 200

// expander copies YAML trees into plain trees: aliases are replaced by
// copies of their anchors and merge keys (<<) are applied the way Ruby's
// Psych applies them for GitLab. Every node created is counted against
// one budget shared by the whole parse.
type expander struct {
	budget int
	err    *Error
	// files maps nodes copied from an included file to that file's name
	// so errors name the right file.
	files map[*yaml.Node]string
	file  string // file being copied ("" for the main file)
}

func newExpander() *expander {
	return &expander{budget: maxNodes, files: map[*yaml.Node]string{}}
}

func (x *expander) fail(n *yaml.Node, msg string) {
	if x.err == nil {
		x.err = &Error{Pos: posOf(n), Msg: msg}
	}
}

func (x *expander) alloc(n *yaml.Node) bool {
	if x.err != nil {
		return false
	}
	x.budget--
	if x.budget < 0 {
		x.fail(n, fmt.Sprintf("Invalid configuration format: the configuration is too large once aliases, includes, extends and !reference are expanded (more than %d YAML nodes)", maxNodes))
		return false
	}
	return true
}

// copy returns a plain copy of n (nil on error, see x.err).
func (x *expander) copy(n *yaml.Node, depth int) *yaml.Node {
	if n == nil || x.err != nil {
		return nil
	}
	if depth > maxCopyDepth {
		x.fail(n, "Invalid configuration format: nesting too deep (recursive alias?)")
		return nil
	}
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			x.fail(n, "Invalid configuration format: unknown alias")
			return nil
		}
		return x.copy(n.Alias, depth+1)
	}
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return nil
		}
		return x.copy(n.Content[0], depth+1)
	}
	if !x.alloc(n) {
		return nil
	}
	out := &yaml.Node{Kind: n.Kind, Style: n.Style, Tag: n.Tag, Value: n.Value, Line: n.Line, Column: n.Column}
	if x.file != "" {
		x.files[out] = x.file
	}
	switch n.Kind {
	case yaml.SequenceNode:
		out.Content = make([]*yaml.Node, 0, len(n.Content))
		for _, c := range n.Content {
			cc := x.copy(c, depth+1)
			if cc == nil {
				return nil
			}
			out.Content = append(out.Content, cc)
		}
	case yaml.MappingNode:
		var m omap
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			rk := k
			for j := 0; rk != nil && rk.Kind == yaml.AliasNode && j < maxAliasDepth; j++ {
				rk = rk.Alias
			}
			if rk != nil && rk.Kind == yaml.ScalarNode && rk.Tag == "!!merge" {
				src := x.copy(v, depth+1)
				if src == nil {
					return nil
				}
				x.merge(&m, src)
				continue
			}
			ck, cv := x.copy(k, depth+1), x.copy(v, depth+1)
			if ck == nil || cv == nil {
				return nil
			}
			m.set(keyString(ck), ck, cv)
		}
		out.Content = m.content()
	}
	return out
}

// merge applies a merge key's value the way Psych does: the merged hash
// overrides keys already present (keeping their position) and appends new
// ones; in a list of hashes earlier ones win.
func (x *expander) merge(m *omap, src *yaml.Node) {
	switch src.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(src.Content); i += 2 {
			m.set(keyString(src.Content[i]), src.Content[i], src.Content[i+1])
		}
	case yaml.SequenceNode:
		var h omap
		for i := len(src.Content) - 1; i >= 0; i-- {
			s := src.Content[i]
			if s.Kind != yaml.MappingNode {
				continue
			}
			for j := 0; j+1 < len(s.Content); j += 2 {
				h.set(keyString(s.Content[j]), s.Content[j], s.Content[j+1])
			}
		}
		for i, k := range h.keys {
			m.set(k, h.kn[i], h.vn[i])
		}
	}
}

func keyString(k *yaml.Node) string {
	if k.Kind != yaml.ScalarNode {
		return fmt.Sprintf("<%s>", kindName(k))
	}
	return k.Value
}

// omap is an insertion-ordered map of YAML key/value nodes.
type omap struct {
	keys   []string
	kn, vn []*yaml.Node
	idx    map[string]int
}

// smallMap is the size up to which omap searches linearly (most YAML
// mappings are small; a Go map per mapping would dominate the cost).
const smallMap = 16

func (m *omap) find(k string) (int, bool) {
	if m.idx != nil {
		i, ok := m.idx[k]
		return i, ok
	}
	for i, x := range m.keys {
		if x == k {
			return i, true
		}
	}
	return -1, false
}

func (m *omap) set(k string, kn, vn *yaml.Node) {
	if i, ok := m.find(k); ok {
		m.kn[i], m.vn[i] = kn, vn
		return
	}
	m.keys = append(m.keys, k)
	m.kn = append(m.kn, kn)
	m.vn = append(m.vn, vn)
	if m.idx != nil {
		m.idx[k] = len(m.keys) - 1
	} else if len(m.keys) > smallMap {
		m.idx = make(map[string]int, 2*len(m.keys))
		for i, x := range m.keys {
			m.idx[x] = i
		}
	}
}

func (m *omap) get(k string) (*yaml.Node, bool) {
	i, ok := m.find(k)
	if !ok {
		return nil, false
	}
	return m.vn[i], true
}

func (m *omap) content() []*yaml.Node {
	out := make([]*yaml.Node, 0, 2*len(m.keys))
	for i := range m.keys {
		out = append(out, m.kn[i], m.vn[i])
	}
	return out
}

func omapOf(n *yaml.Node) *omap {
	m := &omap{}
	if n == nil || n.Kind != yaml.MappingNode {
		return m
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		m.set(keyString(n.Content[i]), n.Content[i], n.Content[i+1])
	}
	return m
}

// clone copies a plain tree, charging the budget.
func (x *expander) clone(n *yaml.Node) *yaml.Node {
	if n == nil || !x.alloc(n) {
		return nil
	}
	out := *n
	if f, ok := x.files[n]; ok {
		x.files[&out] = f
	}
	if len(n.Content) > 0 {
		out.Content = make([]*yaml.Node, len(n.Content))
		for i, c := range n.Content {
			if out.Content[i] = x.clone(c); out.Content[i] == nil {
				return nil
			}
		}
	}
	return &out
}

// deepMerge returns a merged copy of base and over like ActiveSupport's
// Hash#deep_merge: hashes merge recursively, everything else in over
// replaces base. Key order: base's keys first, then over's new ones.
func (x *expander) deepMerge(base, over *yaml.Node) *yaml.Node {
	if base == nil || over == nil || base.Kind != yaml.MappingNode || over.Kind != yaml.MappingNode {
		return x.clone(over)
	}
	if !x.alloc(over) {
		return nil
	}
	out := &yaml.Node{Kind: yaml.MappingNode, Tag: over.Tag, Line: over.Line, Column: over.Column}
	if f, ok := x.files[over]; ok {
		x.files[out] = f
	}
	bm, om := omapOf(base), omapOf(over)
	var m omap
	for i, k := range bm.keys {
		if ov, ok := om.get(k); ok {
			oi, _ := om.find(k)
			m.set(k, x.clone(om.kn[oi]), x.deepMerge(bm.vn[i], ov))
		} else {
			m.set(k, x.clone(bm.kn[i]), x.clone(bm.vn[i]))
		}
	}
	for i, k := range om.keys {
		if _, ok := bm.get(k); !ok {
			m.set(k, x.clone(om.kn[i]), x.clone(om.vn[i]))
		}
	}
	if x.err != nil {
		return nil
	}
	out.Content = m.content()
	return out
}
