// Package trace is the job log pipeline: masking of secrets (also across
// write boundaries), the size-limited disk-backed buffer with its CRC-32, the
// collapsible-section and colour helpers, and the incremental sender that
// streams the log to GitLab and submits the final job state.
//
// Wiring for a job:
//
//	tr, _ := trace.New(trace.Options{MaskValues: masked, JobToken: tok,
//		MaskPrefixes: features.TokenMaskPrefixes, Limit: outputLimitKiB * 1024})
//	defer tr.Close()
//	snd := trace.NewSender(client, tr.Buffer(), trace.SenderOptions{JobID: id, JobToken: tok, Logger: log})
//	snd.Start(ctx)
//	// executors write to tr (or tr.NewStream() per stdout/stderr);
//	// watch snd.Canceling() and snd.Aborted()
//	tr.Finish()
//	err := snd.Finish(shutdownCtx, gitlab.UpdateJobRequest{State: ..., FailureReason: ..., ExitCode: ...})
//
// Masking follows GitLab Runner's visible behaviour, checked against its
// source: every non-empty masked value is masked whatever its length (the
// 8-character minimum is GitLab's rule when saving a variable, not the
// runner's); a value containing newlines is masked as a whole, its lines are
// not masked on their own (short lines such as "}" would blank the log); a
// token prefix stays visible and the token characters after it
// ([A-Za-z0-9._=-]) become [MASKED], e.g. "glpat-[MASKED]"; "glpat-" is
// always a prefix. Unlike GitLab Runner's chained per-value writers, one
// automaton finds all occurrences and overlapping ones merge, so no part of
// any occurrence survives whatever the order of the values.
package trace

import (
	"io"
	"strings"
)

// Mask is what replaces a masked value or a prefixed token in the log.
const Mask = "[MASKED]"

// DefaultTokenPrefixes are always masked, as GitLab Runner does by default.
var DefaultTokenPrefixes = []string{"glpat-"}

// AllDefaultTokenPrefixes are GitLab's documented token prefixes (GitLab
// Runner masks them all with FF_MASK_ALL_DEFAULT_TOKENS). Callers may pass
// them as extra prefixes.
var AllDefaultTokenPrefixes = []string{
	"glpat-", "gloas-", "gldt-", "glrt-", "glcbt-", "glptt-", "glft-",
	"glimt-", "glagent-", "glsoat-", "glffct-", "_gitlab_session=", "gltok-",
}

// tokenAlphabet are the bytes a prefixed token consists of (GitLab Runner's
// token sanitizer alphabet): the token is masked up to the first byte not in
// this set.
var tokenAlphabet = func() (a [256]bool) {
	for c := '0'; c <= '9'; c++ {
		a[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		a[c] = true
		a[c-'a'+'A'] = true
	}
	for _, c := range "-._=" {
		a[c] = true
	}
	return a
}()

// matcher is an Aho-Corasick automaton over the masked values and token
// prefixes. Transitions are stored sparsely (goto + fail links) so memory is
// linear in the total pattern length even for long values such as keys.
type matcher struct {
	root      [256]int32 // transitions out of the root (dense: the hot path)
	skip      [256]bool  // bytes that keep the automaton in the root
	edgeStart []int32    // edges of node i: [edgeStart[i], edgeStart[i+1])
	edgeLabel []byte
	edgeTo    []int32
	fail      []int32
	depth     []int32 // length of the node's string
	valueOut  []int32 // longest masked value that is a suffix of the node's string
	prefixOut []bool  // some token prefix is a suffix of the node's string
	event     []bool  // valueOut > 0 || prefixOut
	maxDepth  int32
	// dense is the full transition table (node<<8 | byte) when it is small
	// enough (the common case of a few values): no fail-link walks. The
	// root's skip scan stays the hot path: it has no load-to-load
	// dependency, so it runs several times faster than any table walk.
	dense []int32
}

// maxDenseNodes bounds the dense table to 4 MiB.
const maxDenseNodes = 4096

func newMatcher(values, prefixes []string) *matcher {
	type key struct {
		node int32
		c    byte
	}
	children := map[key]int32{}
	depth := []int32{0}
	value := []int32{0}
	prefix := []bool{false}
	var labels [][]byte // children labels per node, in insertion order
	labels = append(labels, nil)
	insert := func(s string) int32 {
		n := int32(0)
		for i := 0; i < len(s); i++ {
			k := key{n, s[i]}
			next, ok := children[k]
			if !ok {
				next = int32(len(depth))
				children[k] = next
				depth = append(depth, depth[n]+1)
				value = append(value, 0)
				prefix = append(prefix, false)
				labels = append(labels, nil)
				labels[n] = append(labels[n], s[i])
			}
			n = next
		}
		return n
	}
	for _, v := range values {
		if v == "" {
			continue
		}
		n := insert(v)
		value[n] = int32(len(v))
	}
	for _, p := range prefixes {
		if p == "" {
			continue
		}
		prefix[insert(p)] = true
	}

	m := &matcher{
		edgeStart: make([]int32, len(depth)+1),
		fail:      make([]int32, len(depth)),
		depth:     depth,
		valueOut:  value,
		prefixOut: prefix,
	}
	for i, ls := range labels {
		m.edgeStart[i+1] = m.edgeStart[i] + int32(len(ls))
		for _, c := range ls {
			m.edgeLabel = append(m.edgeLabel, c)
			m.edgeTo = append(m.edgeTo, children[key{int32(i), c}])
		}
	}
	for _, d := range depth {
		m.maxDepth = max(m.maxDepth, d)
	}
	// Breadth-first: fail links and inherited outputs.
	queue := make([]int32, 0, len(depth))
	for c := 0; c < 256; c++ {
		if next, ok := children[key{0, byte(c)}]; ok {
			m.root[c] = next
			queue = append(queue, next)
		} else {
			m.skip[c] = true
		}
	}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		for e := m.edgeStart[n]; e < m.edgeStart[n+1]; e++ {
			c, child := m.edgeLabel[e], m.edgeTo[e]
			f := m.step(m.fail[n], c)
			m.fail[child] = f
			m.valueOut[child] = max(m.valueOut[child], m.valueOut[f])
			m.prefixOut[child] = m.prefixOut[child] || m.prefixOut[f]
			queue = append(queue, child)
		}
	}
	m.event = make([]bool, len(depth))
	for i := range m.event {
		m.event[i] = m.valueOut[i] > 0 || m.prefixOut[i]
	}
	if len(depth) <= maxDenseNodes {
		dense := make([]int32, len(depth)<<8)
		for n := range len(depth) {
			for c := range 256 {
				dense[n<<8|c] = m.step(int32(n), byte(c))
			}
		}
		m.dense = dense
	}
	return m
}

// step is the automaton transition from state s on byte c.
func (m *matcher) step(s int32, c byte) int32 {
	if m.dense != nil {
		return m.dense[int(s)<<8|int(c)]
	}
	for s != 0 {
		for e := m.edgeStart[s]; e < m.edgeStart[s+1]; e++ {
			if m.edgeLabel[e] == c {
				return m.edgeTo[e]
			}
		}
		s = m.fail[s]
	}
	return m.root[c]
}

// interval is a masked range [start, end) of input positions; bufOff is
// where its Mask placeholder sits in the held output.
type interval struct {
	bufOff     int
	start, end int64
}

// Masker is a streaming io.Writer that replaces every occurrence of each
// masked value with [MASKED], and the token characters following each token
// prefix with [MASKED] (the prefix stays visible, as in GitLab Runner:
// "glpat-[MASKED]"). Values split across any number of Write calls are
// masked. Overlapping or adjacent-overlapping occurrences are merged into
// one [MASKED], so the longest (and any union of) matches is hidden
// entirely; occurrences that merely touch give one [MASKED] each.
//
// Only the bytes that may still turn out to be part of a match are held back
// (at most the longest value or prefix, plus an unfinished token); all other
// bytes are passed on before Write returns. Flush or Close emits the held
// tail. A Masker is not safe for concurrent use.
type Masker struct {
	next io.Writer
	m    *matcher

	state      int32
	pos        int64 // input bytes consumed
	tokenRun   bool  // inside the token characters after a prefix
	tokenStart int64 // position right after the prefix

	held    []byte     // output not yet passed on: raw bytes and placeholders
	ivs     []interval // masked ranges whose placeholder is in held
	baseBuf int        // held[baseBuf] is input position baseAbs ...
	baseAbs int64      // ... when no interval precedes it
}

// NewMasker returns a Masker writing to next. Empty values and prefixes are
// ignored; prefixes are trimmed of white space. DefaultTokenPrefixes are
// always added. Values are masked whatever their length (GitLab enforces its
// minimum length when the variable is saved, the runner masks what it gets).
func NewMasker(next io.Writer, values, prefixes []string) *Masker {
	ps := make([]string, 0, len(prefixes)+len(DefaultTokenPrefixes))
	for _, p := range append(append([]string(nil), DefaultTokenPrefixes...), prefixes...) {
		if p = strings.TrimSpace(p); p != "" {
			ps = append(ps, p)
		}
	}
	return &Masker{next: next, m: newMatcher(values, ps)}
}

// Write masks p and passes on everything that can no longer be part of a
// match. It always consumes all of p; an error is the next writer's.
func (w *Masker) Write(p []byte) (int, error) {
	m := w.m
	s, pos := w.state, w.pos
	runStart := 0 // p[runStart:i] not yet appended to held
	// dirty: token characters consumed since the token interval was last
	// extended; extending lazily keeps long tokens cheap.
	dirty := false
	i := 0
	for i < len(p) {
		if s == 0 {
			// Hot paths: bytes that cannot start a match, outside or
			// inside a token.
			j := i
			if !w.tokenRun {
				for j < len(p) && m.skip[p[j]] {
					j++
				}
			} else {
				for j < len(p) && m.skip[p[j]] && tokenAlphabet[p[j]] {
					j++
				}
				dirty = dirty || j > i
			}
			pos += int64(j - i)
			i = j
			if i == len(p) {
				break
			}
		}
		c := p[i]
		i++
		pos++
		s = m.step(s, c)
		if w.tokenRun {
			if tokenAlphabet[c] {
				dirty = true
			} else {
				if dirty {
					// The token ended before c.
					w.held = append(w.held, p[runStart:i-1]...)
					runStart = i - 1
					w.pos = pos - 1
					w.cover(w.tokenStart)
					dirty = false
				}
				w.tokenRun = false
			}
		}
		if !m.event[s] {
			continue
		}
		w.held = append(w.held, p[runStart:i]...)
		runStart = i
		w.pos = pos
		if dirty {
			w.cover(w.tokenStart)
			dirty = false
		}
		if v := m.valueOut[s]; v > 0 {
			w.cover(pos - int64(v))
		}
		if m.prefixOut[s] && !w.tokenRun {
			w.tokenRun = true
			w.tokenStart = pos
		}
	}
	w.held = append(w.held, p[runStart:]...)
	w.state, w.pos = s, pos
	if dirty {
		w.cover(w.tokenStart)
	}

	safe := pos - int64(m.depth[s])
	if w.tokenRun && w.tokenStart < safe {
		safe = w.tokenStart
	}
	return len(p), w.emit(safe)
}

// cover records that input [start, w.pos) is masked, merging it with the
// held intervals it overlaps.
func (w *Masker) cover(start int64) {
	newStart := start
	for len(w.ivs) > 0 && w.ivs[len(w.ivs)-1].end > start {
		newStart = min(newStart, w.ivs[len(w.ivs)-1].start)
		w.ivs = w.ivs[:len(w.ivs)-1]
	}
	var off int
	if n := len(w.ivs); n > 0 {
		l := w.ivs[n-1]
		off = l.bufOff + len(Mask) + int(newStart-l.end)
	} else {
		off = w.baseBuf + int(newStart-w.baseAbs)
	}
	w.held = append(w.held[:off], Mask...)
	w.ivs = append(w.ivs, interval{bufOff: off, start: newStart, end: w.pos})
}

// emit passes on the held output for input positions before safe: no match
// can start before safe any more, so intervals ending at or before it are
// final.
func (w *Masker) emit(safe int64) error {
	i := 0
	for i < len(w.ivs) && w.ivs[i].end <= safe {
		i++
	}
	var to int
	var abs int64
	if i < len(w.ivs) && w.ivs[i].start < safe {
		to, abs = w.ivs[i].bufOff, w.ivs[i].start
	} else {
		if i > 0 {
			l := w.ivs[i-1]
			to = l.bufOff + len(Mask) + int(safe-l.end)
		} else {
			to = w.baseBuf + int(safe-w.baseAbs)
		}
		abs = safe
	}
	if to <= 0 {
		return nil
	}
	_, err := w.next.Write(w.held[:to])
	n := copy(w.held, w.held[to:])
	w.held = w.held[:n]
	w.ivs = w.ivs[:copy(w.ivs, w.ivs[i:])]
	for k := range w.ivs {
		w.ivs[k].bufOff -= to
	}
	w.baseBuf, w.baseAbs = 0, abs
	return err
}

// Flush passes on everything held, ending any unfinished token. A value
// split across a Flush is not masked, so flush only at the end of a stream.
func (w *Masker) Flush() error {
	w.tokenRun = false
	w.state = 0
	return w.emit(w.pos)
}

// Close flushes the held tail. It does not close the next writer.
func (w *Masker) Close() error { return w.Flush() }
