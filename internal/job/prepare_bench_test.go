package job

import (
	"fmt"
	"testing"
)

// BenchmarkPrepareManyVariables builds a job with n variables (some
// masked, some file variables, some referring to others) through Prepare,
// the path every executor takes before get_sources. The time per op must
// grow linearly with n (issue #12: 200 000 variables took minutes).
func BenchmarkPrepareManyVariables(b *testing.B) {
	for _, n := range []int{20_000, 200_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			p := testPayload(Step{Name: "script", Script: []string{"true"}, When: "on_success"})
			p.JobInfo.ProjectFullPath = "g/p"
			p.Variables = make(Variables, 0, n)
			for i := range n {
				v := Variable{Key: fmt.Sprintf("VAR_%d", i), Value: fmt.Sprintf("value-%d-$VAR_%d", i, i/2), Public: true}
				switch i % 10 {
				case 1:
					v.Masked, v.Value = true, fmt.Sprintf("secret-value-%08d", i)
				case 2:
					v.File = true
				}
				p.Variables = append(p.Variables, v)
			}
			env := RunnerEnv{BuildsDir: "/b", ProjectDir: "/b/g/p"}
			b.ResetTimer()
			for b.Loop() {
				if _, err := Prepare(b.Context(), p, env, ScriptOptions{Shell: "bash"}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
