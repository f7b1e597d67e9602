package ciyaml

import (
	"fmt"

	"go.yaml.in/yaml/v3"
)

// maxAliasDepth bounds alias/merge resolution so hostile input (nested
// aliases) cannot make the walk explode.
const maxAliasDepth = 32

// pair is one key/value of a mapping after merge keys were applied.
type pair struct {
	Key   string
	KeyN  *yaml.Node
	Value *yaml.Node
}

func posOf(n *yaml.Node) Pos {
	if n == nil {
		return Pos{}
	}
	return Pos{Line: n.Line, Col: n.Column}
}

// resolve follows aliases to the anchored node.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < maxAliasDepth; i++ {
		n = n.Alias
	}
	if n != nil && n.Kind == yaml.AliasNode {
		return nil
	}
	return n
}

func isNull(n *yaml.Node) bool {
	n = resolve(n)
	return n == nil || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

// isString reports whether n is a YAML string scalar (quoted or plain text
// that YAML does not read as a number, boolean or null), as Ruby's Psych
// would load it for GitLab.
func isString(n *yaml.Node) bool {
	n = resolve(n)
	return n != nil && n.Kind == yaml.ScalarNode && n.Tag == "!!str"
}

// isScalarValue reports whether n is a string, integer or float: the value
// types GitLab accepts for variables and durations.
func isScalarValue(n *yaml.Node) bool {
	n = resolve(n)
	if n == nil || n.Kind != yaml.ScalarNode {
		return false
	}
	switch n.Tag {
	case "!!str", "!!int", "!!float":
		return true
	}
	return false
}

// mapping returns the pairs of a mapping node in order, with YAML merge
// keys (<<) applied: explicit keys win over merged ones and earlier merge
// sources over later ones, as in YAML 1.1. It reports false when n is not
// a mapping. Duplicate keys keep the last value, as Ruby's Psych does.
func mapping(n *yaml.Node) ([]pair, bool) {
	return mappingDepth(n, 0)
}

func mappingDepth(n *yaml.Node, depth int) ([]pair, bool) {
	n = resolve(n)
	if n == nil || n.Kind != yaml.MappingNode || depth > maxAliasDepth {
		return nil, false
	}
	var explicit, merged []pair
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		rk := resolve(k)
		if rk == nil {
			continue
		}
		if rk.Kind == yaml.ScalarNode && rk.Tag == "!!merge" {
			src := resolve(v)
			if src == nil {
				continue
			}
			sources := []*yaml.Node{src}
			if src.Kind == yaml.SequenceNode {
				sources = src.Content
			}
			for _, s := range sources {
				ps, ok := mappingDepth(s, depth+1)
				if ok {
					merged = appendMissing(merged, ps)
				}
			}
			continue
		}
		key := rk.Value
		if rk.Kind != yaml.ScalarNode {
			key = fmt.Sprintf("<%s>", kindName(rk))
		}
		explicit = setPair(explicit, pair{Key: key, KeyN: k, Value: v})
	}
	return appendMissing(explicit, merged), true
}

func setPair(ps []pair, p pair) []pair {
	for i := range ps {
		if ps[i].Key == p.Key {
			ps[i] = p
			return ps
		}
	}
	return append(ps, p)
}

func appendMissing(dst, src []pair) []pair {
	for _, p := range src {
		found := false
		for _, d := range dst {
			if d.Key == p.Key {
				found = true
				break
			}
		}
		if !found {
			dst = append(dst, p)
		}
	}
	return dst
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "hash"
	case yaml.SequenceNode:
		return "array"
	case yaml.ScalarNode:
		return "scalar"
	}
	return "node"
}
