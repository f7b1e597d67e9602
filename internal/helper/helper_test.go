package helper

import (
	"io"

	"github.com/podrunner/podrunner/internal/cli"
)

// execute runs the helper commands under a root as the binaries build it.
func execute(args []string, stdout, stderr io.Writer) int {
	root := cli.NewRoot("podrunner-helper", "test", "test")
	root.AddCommand(Commands()...)
	return cli.Execute(root, args, stdout, stderr)
}
