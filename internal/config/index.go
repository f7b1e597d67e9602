package config

import (
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// keyIndex maps key paths ("runners[0].kubernetes.cpu_limit") to the line
// where they are written, so that errors found after decoding can point at
// the file. Paths use joinKey.
type keyIndex struct {
	lines map[string]int
	// byLine lists the keys of each line in order of their column.
	byLine map[int][]posKey
	// kvs lists every key = value in document order.
	kvs []kvPos
	pos positions
}

// positions turns byte offsets into line and column (1-based, column in
// bytes, as go-toml's Shape) in O(log lines): Shape counts from the start
// of the document on every call, which made indexing quadratic.
type positions struct{ lineStarts []int }

func newPositions(data []byte) positions {
	starts := []int{0}
	for i, c := range data {
		if c == '\n' {
			starts = append(starts, i+1)
		}
	}
	return positions{lineStarts: starts}
}

func (ps positions) at(r unstable.Range) (line, col int) {
	off := int(r.Offset)
	i := sort.SearchInts(ps.lineStarts, off+1) - 1 // last start <= off
	return i + 1, off - ps.lineStarts[i] + 1
}

type kvPos struct {
	path      string
	line, col int
	parts     []string // the key as written
	raw       []byte   // "key = value" as written (copied)
}

type posKey struct {
	col  int
	path string
}

var bareKey = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// joinKey appends one key part to a path, quoting parts that are not bare
// TOML keys.
func joinKey(prefix, part string) string {
	if !bareKey.MatchString(part) {
		part = strconv.Quote(part)
	}
	if prefix == "" {
		return part
	}
	return prefix + "." + part
}

func indexKey(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

// buildIndex walks the document with go-toml's position-aware parser. It is
// best effort: on a syntax error it returns what it saw so far (the
// decoder reports the error itself).
func buildIndex(data []byte) (idx *keyIndex) {
	idx = &keyIndex{lines: map[string]int{}, byLine: map[int][]posKey{}, pos: newPositions(data)}
	defer func() {
		// The unstable parser documents panics on misuse; never let a bad
		// document crash the runner because of the index.
		if recover() != nil {
			idx.sort()
		}
	}()
	p := &unstable.Parser{}
	p.Reset(data)
	arrays := map[string]int{} // array-table path -> number of elements
	current := ""
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			parts, first := keyParts(e.Key())
			path := ""
			for i, part := range parts {
				path = joinKey(path, part)
				last := i == len(parts)-1
				if last && e.Kind == unstable.ArrayTable {
					n := arrays[path]
					arrays[path] = n + 1
					path = indexKey(path, n)
				} else if n, ok := arrays[path]; ok && n > 0 {
					path = indexKey(path, n-1)
				}
			}
			current = path
			idx.add(p, path, first)
		case unstable.KeyValue:
			idx.keyValue(p, current, e)
		}
	}
	idx.sort()
	return idx
}

func keyParts(it unstable.Iterator) (parts []string, first *unstable.Node) {
	for it.Next() {
		n := it.Node()
		if first == nil {
			first = n
		}
		parts = append(parts, string(n.Data))
	}
	return parts, first
}

func (idx *keyIndex) keyValue(p *unstable.Parser, table string, kv *unstable.Node) {
	parts, first := keyParts(kv.Key())
	path := table
	for _, part := range parts {
		path = joinKey(path, part)
	}
	idx.add(p, path, first)
	if first != nil {
		line, col := idx.pos.at(first.Raw)
		idx.kvs = append(idx.kvs, kvPos{path: path, line: line, col: col, parts: parts, raw: append([]byte(nil), p.Raw(kv.Raw)...)})
	}
	idx.value(p, path, kv.Value())
}

func (idx *keyIndex) value(p *unstable.Parser, path string, v *unstable.Node) {
	switch v.Kind {
	case unstable.InlineTable:
		it := v.Children()
		for it.Next() {
			if c := it.Node(); c.Kind == unstable.KeyValue {
				idx.keyValue(p, path, c)
			}
		}
	case unstable.Array:
		it := v.Children()
		i := 0
		for it.Next() {
			c := it.Node()
			if c.Kind == unstable.Comment {
				continue
			}
			ep := indexKey(path, i)
			if c.Kind == unstable.InlineTable {
				idx.add(p, ep, c)
			}
			idx.value(p, ep, c)
			i++
		}
	}
}

func (idx *keyIndex) add(p *unstable.Parser, path string, n *unstable.Node) {
	if n == nil {
		return
	}
	line, col := idx.pos.at(n.Raw)
	if _, seen := idx.lines[path]; !seen {
		idx.lines[path] = line
	}
	idx.byLine[line] = append(idx.byLine[line], posKey{col: col, path: path})
}

func (idx *keyIndex) sort() {
	for _, ks := range idx.byLine {
		sort.SliceStable(ks, func(i, j int) bool { return ks[i].col < ks[j].col })
	}
}

// line returns the line of path, or of its nearest written ancestor
// (a missing runners[0].executor points at the [[runners]] header).
func (idx *keyIndex) line(path string) int {
	for path != "" {
		if l, ok := idx.lines[path]; ok {
			return l
		}
		path = parentKey(path)
	}
	return 0
}

// keyAt returns the path of the last key that starts on line at or before
// col.
func (idx *keyIndex) keyAt(line, col int) string {
	ks := idx.byLine[line]
	best := ""
	for _, k := range ks {
		if k.col <= col || best == "" {
			best = k.path
		}
	}
	return best
}

// parentKey strips the last part (".x" or "[n]") of a path; quoted parts
// may contain dots, so scan from the end honouring quotes.
func parentKey(path string) string {
	if strings.HasSuffix(path, "]") {
		if i := strings.LastIndexByte(path, '['); i >= 0 {
			return path[:i]
		}
	}
	inQuote := false
	for i := len(path) - 1; i >= 0; i-- {
		switch path[i] {
		case '"':
			if i == 0 || path[i-1] != '\\' {
				inQuote = !inQuote
			}
		case '.':
			if !inQuote {
				return path[:i]
			}
		}
	}
	return ""
}
