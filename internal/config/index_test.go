package config

import (
	"fmt"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2/unstable"
)

// TestPositionsMatchShape: the line/column table gives what go-toml's
// Shape gives, for every key of a document with multi-byte text, CRLF,
// inline tables and arrays.
func TestPositionsMatchShape(t *testing.T) {
	doc := "concurrent = 2\r\n# é comment ✅\n[[runners]]\n  name = \"ü\"\n  k = { a = 1, \"b c\" = [1, 2] }\n\n[[runners]]\nname='x'\n"
	p := &unstable.Parser{}
	p.Reset([]byte(doc))
	ps := newPositions([]byte(doc))
	checked := 0
	var check func(n *unstable.Node)
	check = func(n *unstable.Node) {
		if n == nil || n.Kind == unstable.Comment {
			return
		}
		if n.Raw.Length > 0 || n.Raw.Offset > 0 {
			sh := p.Shape(n.Raw)
			line, col := ps.at(n.Raw)
			if line != sh.Start.Line || col != sh.Start.Column {
				t.Errorf("%q at %d: %d:%d, Shape %d:%d", n.Data, n.Raw.Offset, line, col, sh.Start.Line, sh.Start.Column)
			}
			checked++
		}
		for it := n.Children(); it.Next(); {
			check(it.Node())
		}
	}
	for p.NextExpression() {
		check(p.Expression())
	}
	if p.Error() != nil {
		t.Fatal(p.Error())
	}
	if checked < 10 {
		t.Fatalf("only %d nodes checked", checked)
	}
}

// BenchmarkParseManyRunners shows parsing grows linearly with the number
// of runners (it was quadratic: 8 000 runners took 38 s).
func BenchmarkParseManyRunners(b *testing.B) {
	for _, n := range []int{500, 2000, 8000} {
		var sb strings.Builder
		sb.WriteString("concurrent = 4\n")
		for i := range n {
			fmt.Fprintf(&sb, "[[runners]]\nname = \"r%d\"\nurl = \"https://gitlab.example.com\"\ntoken = \"glrt-%020d\"\nexecutor = \"shell\"\n", i, i)
		}
		data := []byte(sb.String())
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for b.Loop() {
				if _, _, err := Parse(data, "config.toml"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestHugeValuesAreClippedInErrors: a bad value of any size gives a short
// error that still names the key, the line and the value's start.
func TestHugeValuesAreClippedInErrors(t *testing.T) {
	huge := strings.Repeat("ü", 500_000) // 1 MB
	runner := "[[runners]]\nname = \"r\"\nurl = \"https://gitlab.example.com\"\ntoken = \"glrt-x\"\nexecutor = \"shell\"\n"
	for _, tc := range []struct{ name, doc string }{
		{"log_level", "log_level = \"" + huge + "\"\n"},
		{"url", strings.Replace(runner, "https://gitlab.example.com", "ftp://"+huge, 1)},
		{"shell", runner + "shell = \"" + huge + "\"\n"},
		{"environment", runner + "environment = [\"" + huge + "\"]\n"},
		{"duration", "connection_max_age = \"" + huge + "\"\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Parse([]byte(tc.doc), "config.toml")
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if len(msg) > 1000 || !strings.Contains(msg, "üüü") || !strings.Contains(msg, "bytes)") || !strings.Contains(msg, "config.toml:") {
				t.Fatalf("error of %d bytes: %.300s", len(msg), msg)
			}
		})
	}
}
