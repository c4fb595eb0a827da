// Command etcd is the full etcd server binary (the same entry point as the
// upstream release binary), from go.etcd.io/etcd/server/v3 pinned in
// ../../go.mod to the version Kubernetes itself is tested against.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
