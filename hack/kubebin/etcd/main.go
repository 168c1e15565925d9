// Command etcd is the etcd server, built from go.etcd.io/etcd/server/v3.
//
// etcd's own main package lives in the go.etcd.io/etcd/v3 module, whose go.mod
// uses replace directives and so cannot be `go install`ed; this wrapper calls
// the same entry point (etcdmain.Main) from a module of our own.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
