package ciyaml

import (
	"fmt"
	"regexp"
	"strings"
)

// maxExprDepth bounds parentheses nesting in a rules:if expression.
const maxExprDepth = 50

// Expr is a parsed CI/CD variable expression (`rules:if`, `only:
// variables`, `workflow:rules:if`): comparisons with == != =~ !~ between
// $VARIABLES, 'strings', "strings", /patterns/flags and null, combined with
// && (binds tighter) and ||, and parentheses.
type Expr struct {
	src  string
	root exprNode
}

// ParseExpression parses a variable expression. The error says what is
// wrong; callers wrap it with GitLab's "invalid expression syntax".
func ParseExpression(s string) (*Expr, error) {
	toks, err := lexExpr(s)
	if err != nil {
		return nil, err
	}
	ps := &exprParser{toks: toks}
	n, err := ps.or(0)
	if err != nil {
		return nil, err
	}
	if ps.i < len(ps.toks) {
		return nil, fmt.Errorf("unexpected %q", ps.toks[ps.i].text)
	}
	return &Expr{src: s, root: n}, nil
}

// String returns the source text.
func (e *Expr) String() string { return e.src }

// Evaluate reports whether the expression is true with the variables of
// lookup (a missing variable is null; an empty one is the empty string).
func (e *Expr) Evaluate(lookup func(name string) (string, bool)) bool {
	return e.root.eval(lookup).present()
}

type tokKind int

const (
	tVar tokKind = iota
	tStr
	tPattern
	tNull
	tOp // == != =~ !~ && ||
	tLParen
	tRParen
)

type token struct {
	kind tokKind
	text string // operator, variable name, string value
	re   *regexp.Regexp
}

func isNameByte(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func lexExpr(s string) ([]token, error) {
	var toks []token
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '(':
			toks = append(toks, token{kind: tLParen, text: "("})
			i++
		case c == ')':
			toks = append(toks, token{kind: tRParen, text: ")"})
			i++
		case c == '$':
			// GitLab's Lexeme::Variable is /\$(?<name>\w+)/: ${VAR} is no
			// variable in an expression (only in scripts and paths).
			j := i + 1
			start := j
			for j < len(s) && isNameByte(s[j]) {
				j++
			}
			if j == start {
				if j < len(s) && s[j] == '{' {
					return nil, fmt.Errorf("unknown lexeme at %q: write $VAR, not ${VAR}, in expressions", s[i:])
				}
				return nil, fmt.Errorf("invalid variable at %q", s[i:])
			}
			name := s[start:j]
			toks = append(toks, token{kind: tVar, text: name})
			i = j
		case c == '"' || c == '\'':
			var b strings.Builder
			j := i + 1
			closed := false
			for j < len(s) {
				if s[j] == '\\' && j+1 < len(s) && (s[j+1] == c || s[j+1] == '\\') {
					b.WriteByte(s[j+1])
					j += 2
					continue
				}
				if s[j] == c {
					closed = true
					j++
					break
				}
				b.WriteByte(s[j])
				j++
			}
			if !closed {
				return nil, fmt.Errorf("unterminated string at %q", s[i:])
			}
			toks = append(toks, token{kind: tStr, text: b.String()})
			i = j
		case c == '/':
			re, n, err := lexPattern(s[i:])
			if err != nil {
				return nil, err
			}
			toks = append(toks, token{kind: tPattern, text: s[i : i+n], re: re})
			i += n
		case strings.HasPrefix(s[i:], "null") && (i+4 == len(s) || !isNameByte(s[i+4])):
			toks = append(toks, token{kind: tNull, text: "null"})
			i += 4
		default:
			op := ""
			for _, o := range []string{"==", "!=", "=~", "!~", "&&", "||"} {
				if strings.HasPrefix(s[i:], o) {
					op = o
					break
				}
			}
			if op == "" {
				return nil, fmt.Errorf("unexpected %q", s[i:])
			}
			toks = append(toks, token{kind: tOp, text: op})
			i += 2
		}
	}
	return toks, nil
}

// lexPattern reads /regex/flags at the start of s and returns its length.
func lexPattern(s string) (*regexp.Regexp, int, error) {
	j := 1
	var b strings.Builder
	for ; j < len(s) && s[j] != '/'; j++ {
		if s[j] == '\\' && j+1 < len(s) {
			if s[j+1] == '/' {
				b.WriteByte('/')
			} else {
				b.WriteString(s[j : j+2])
			}
			j++
			continue
		}
		b.WriteByte(s[j])
	}
	if j >= len(s) {
		return nil, 0, fmt.Errorf("unterminated pattern %q", s)
	}
	j++ // closing slash
	fstart := j
	for j < len(s) && isNameByte(s[j]) {
		j++
	}
	re, err := compilePattern(b.String(), s[fstart:j])
	if err != nil {
		return nil, 0, err
	}
	return re, j, nil
}

// compilePattern compiles a GitLab pattern with RE2, the flags (i, m, s,
// U) given as an inline group as GitLab does.
func compilePattern(body, flags string) (*regexp.Regexp, error) {
	for _, f := range flags {
		if !strings.ContainsRune("imsU", f) {
			return nil, fmt.Errorf("unknown pattern flag %q", f)
		}
	}
	if flags != "" {
		body = "(?" + flags + ")" + body
	}
	re, err := regexp.Compile(body)
	if err != nil {
		return nil, fmt.Errorf("invalid pattern: %v", err)
	}
	return re, nil
}

// patternFromString reads "/re/flags" held by a variable or string.
func patternFromString(s string) *regexp.Regexp {
	if len(s) < 2 || s[0] != '/' {
		return nil
	}
	re, n, err := lexPattern(s)
	if err != nil || n != len(s) {
		return nil
	}
	return re
}

type exprParser struct {
	toks []token
	i    int
}

func (p *exprParser) peekOp(op string) bool {
	return p.i < len(p.toks) && p.toks[p.i].kind == tOp && p.toks[p.i].text == op
}

func (p *exprParser) or(depth int) (exprNode, error) {
	l, err := p.and(depth)
	if err != nil {
		return nil, err
	}
	for p.peekOp("||") {
		p.i++
		r, err := p.and(depth)
		if err != nil {
			return nil, err
		}
		l = &binNode{op: "||", l: l, r: r}
	}
	return l, nil
}

func (p *exprParser) and(depth int) (exprNode, error) {
	l, err := p.cmp(depth)
	if err != nil {
		return nil, err
	}
	for p.peekOp("&&") {
		p.i++
		r, err := p.cmp(depth)
		if err != nil {
			return nil, err
		}
		l = &binNode{op: "&&", l: l, r: r}
	}
	return l, nil
}

func (p *exprParser) cmp(depth int) (exprNode, error) {
	l, err := p.primary(depth)
	if err != nil {
		return nil, err
	}
	if p.i < len(p.toks) && p.toks[p.i].kind == tOp {
		op := p.toks[p.i].text
		if op == "==" || op == "!=" || op == "=~" || op == "!~" {
			p.i++
			r, err := p.primary(depth)
			if err != nil {
				return nil, err
			}
			if _, isBin := r.(*binNode); isBin {
				return nil, fmt.Errorf("parenthesised operand of %s must be a value", op)
			}
			return &binNode{op: op, l: l, r: r}, nil
		}
	}
	return l, nil
}

func (p *exprParser) primary(depth int) (exprNode, error) {
	if p.i >= len(p.toks) {
		return nil, fmt.Errorf("unexpected end of expression")
	}
	t := p.toks[p.i]
	p.i++
	switch t.kind {
	case tLParen:
		if depth >= maxExprDepth {
			return nil, fmt.Errorf("too many nested parentheses")
		}
		n, err := p.or(depth + 1)
		if err != nil {
			return nil, err
		}
		if p.i >= len(p.toks) || p.toks[p.i].kind != tRParen {
			return nil, fmt.Errorf("missing )")
		}
		p.i++
		return n, nil
	case tVar:
		return varNode(t.text), nil
	case tStr:
		return litNode{v: value{kind: vStr, s: t.text}}, nil
	case tPattern:
		return litNode{v: value{kind: vRegex, re: t.re, s: t.text}}, nil
	case tNull:
		return litNode{v: value{kind: vNull}}, nil
	}
	return nil, fmt.Errorf("unexpected %q", t.text)
}

type valueKind int

const (
	vNull valueKind = iota
	vStr
	vBool
	vRegex
)

type value struct {
	kind valueKind
	s    string
	b    bool
	re   *regexp.Regexp
}

// truthy is Ruby truthiness (everything but nil and false), used by &&
// and || which return one of their operands like Ruby does.
func (v value) truthy() bool { return v.kind != vNull && (v.kind != vBool || v.b) }

// present is Rails' present?: the final answer of a statement.
func (v value) present() bool {
	switch v.kind {
	case vStr:
		return strings.TrimSpace(v.s) != ""
	case vBool:
		return v.b
	case vRegex:
		return true
	}
	return false
}

func (v value) equal(o value) bool {
	if v.kind != o.kind {
		return false
	}
	switch v.kind {
	case vNull:
		return true
	case vBool:
		return v.b == o.b
	}
	return v.s == o.s
}

type exprNode interface {
	eval(lookup func(string) (string, bool)) value
}

type litNode struct{ v value }

func (n litNode) eval(func(string) (string, bool)) value { return n.v }

type varNode string

func (n varNode) eval(lookup func(string) (string, bool)) value {
	if lookup == nil {
		return value{}
	}
	if s, ok := lookup(string(n)); ok {
		return value{kind: vStr, s: s}
	}
	return value{}
}

type binNode struct {
	op   string
	l, r exprNode
}

func boolValue(b bool) value { return value{kind: vBool, b: b} }

func (n *binNode) eval(lookup func(string) (string, bool)) value {
	l := n.l.eval(lookup)
	switch n.op {
	case "&&":
		if !l.truthy() {
			return l
		}
		return n.r.eval(lookup)
	case "||":
		if l.truthy() {
			return l
		}
		return n.r.eval(lookup)
	}
	r := n.r.eval(lookup)
	switch n.op {
	case "==":
		return boolValue(l.equal(r))
	case "!=":
		return boolValue(!l.equal(r))
	}
	re := r.re
	if r.kind == vStr {
		re = patternFromString(r.s)
	}
	matched := l.kind == vStr && re != nil && re.MatchString(l.s)
	if n.op == "=~" {
		return boolValue(matched)
	}
	// !~ is true for a null left side, like GitLab.
	return boolValue(!matched)
}
