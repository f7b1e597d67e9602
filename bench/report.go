package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// Cell is one runner's figure in a row: a distribution (p50/p95 over N
// samples), a single value, or a text (a skip reason, a CRC verdict).
type Cell struct {
	N     int      `json:"n,omitempty"`
	P50   *float64 `json:"p50,omitempty"`
	P95   *float64 `json:"p95,omitempty"`
	Value *float64 `json:"value,omitempty"`
	Text  string   `json:"text,omitempty"`
}

// Dist is the cell of samples in the row's unit.
func Dist(xs []float64) Cell {
	if len(xs) == 0 {
		return Cell{Text: "no samples"}
	}
	p50, p95 := Quantile(xs, .50), Quantile(xs, .95)
	return Cell{N: len(xs), P50: &p50, P95: &p95}
}

// DistMS is the cell of durations in milliseconds.
func DistMS(ds []time.Duration) Cell {
	xs := make([]float64, len(ds))
	for i, d := range ds {
		xs[i] = float64(d) / float64(time.Millisecond)
	}
	return Dist(xs)
}

// Val is a single-value cell.
func Val(v float64) Cell { return Cell{Value: &v} }

// Text is a text-only cell.
func Text(s string) Cell { return Cell{Text: s} }

// main is the figure a cell is compared on: p50 for distributions, the
// value otherwise.
func (c Cell) main() (float64, bool) {
	switch {
	case c.P50 != nil:
		return *c.P50, true
	case c.Value != nil:
		return *c.Value, true
	}
	return 0, false
}

func (c Cell) format() string {
	var s string
	switch {
	case c.P50 != nil:
		s = fmt.Sprintf("%s / %s", num(*c.P50), num(*c.P95))
	case c.Value != nil:
		s = num(*c.Value)
	}
	if c.Text != "" {
		if s != "" {
			s += " "
		}
		s += c.Text
	}
	if s == "" {
		s = "-"
	}
	return s
}

// num prints a figure with a precision that suits its size.
func num(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// Target is an upper bound on a row's main figure (p50 or value).
type Target struct {
	Below float64 `json:"below"`
}

// Row is one figure of a scenario, with one cell per runner.
type Row struct {
	Scenario string          `json:"scenario"`
	Figure   string          `json:"figure"`
	Unit     string          `json:"unit,omitempty"`
	Target   *Target         `json:"target,omitempty"`
	Cells    map[string]Cell `json:"cells"`
}

// Report is everything the bench measured.
type Report struct {
	Started  time.Time `json:"started"`
	Seconds  float64   `json:"seconds"`
	Machine  string    `json:"machine"`
	Runners  []string  `json:"runners"`
	Commands []string  `json:"commands"`
	Notes    []string  `json:"notes,omitempty"`
	Rows     []Row     `json:"rows"`
}

// Add appends a row, or sets the runner's cell in the existing row of the
// same scenario and figure (runners run the scenarios one after another).
func (r *Report) Add(runner, scenario, figure, unit string, target *Target, c Cell) {
	for i := range r.Rows {
		if r.Rows[i].Scenario == scenario && r.Rows[i].Figure == figure {
			r.Rows[i].Cells[runner] = c
			return
		}
	}
	r.Rows = append(r.Rows, Row{Scenario: scenario, Figure: figure, Unit: unit, Target: target, Cells: map[string]Cell{runner: c}})
}

// Quantile is the nearest-rank quantile q (0..1] of xs; 0 for no samples.
func Quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

// verdict compares the first runner's cell with the row's target.
func (row Row) verdict(runner string) string {
	if row.Target == nil {
		return ""
	}
	v, ok := row.Cells[runner].main()
	if !ok {
		return fmt.Sprintf("< %s", num(row.Target.Below))
	}
	if v < row.Target.Below {
		return fmt.Sprintf("< %s met", num(row.Target.Below))
	}
	return fmt.Sprintf("< %s MISSED by %s", num(row.Target.Below), num(v-row.Target.Below))
}

// ratio is other/first on the main figures, "" when either is missing
// or the first is zero.
func (row Row) ratio(first, other string) string {
	a, ok1 := row.Cells[first].main()
	b, ok2 := row.Cells[other].main()
	if !ok1 || !ok2 || a == 0 {
		return ""
	}
	return fmt.Sprintf("%.2fx", b/a)
}

// WriteTable prints the report as a Markdown table: per scenario, one
// line per figure, one column per runner (p50 / p95 for distributions),
// the ratio of each other runner to the first, and the target verdict of
// the first.
func (r *Report) WriteTable(w io.Writer) error {
	head := []string{"scenario", "figure", "unit"}
	for i, name := range r.Runners {
		head = append(head, name)
		if i > 0 {
			head = append(head, name+" / "+r.Runners[0])
		}
	}
	head = append(head, "target ("+first(r.Runners)+")")
	lines := [][]string{head}
	for _, row := range r.Rows {
		l := []string{row.Scenario, row.Figure, row.Unit}
		for i, name := range r.Runners {
			c, ok := row.Cells[name]
			if !ok {
				l = append(l, "-")
			} else {
				l = append(l, c.format())
			}
			if i > 0 {
				l = append(l, row.ratio(r.Runners[0], name))
			}
		}
		l = append(l, row.verdict(first(r.Runners)))
		lines = append(lines, l)
	}
	width := make([]int, len(head))
	for _, l := range lines {
		for i, c := range l {
			width[i] = max(width[i], len(c))
		}
	}
	var b strings.Builder
	for n, l := range lines {
		b.WriteString("|")
		for i, c := range l {
			fmt.Fprintf(&b, " %-*s |", width[i], c)
		}
		b.WriteString("\n")
		if n == 0 {
			b.WriteString("|")
			for i := range l {
				b.WriteString(strings.Repeat("-", width[i]+2) + "|")
			}
			b.WriteString("\n")
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "\n- %s", n)
	}
	if len(r.Notes) > 0 {
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON prints the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}
