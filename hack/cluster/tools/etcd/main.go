// Command etcd is etcd's server built from its Go module at the version
// k8s.io/kubernetes pins, since Debian's etcd is older than what k8s expects.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
