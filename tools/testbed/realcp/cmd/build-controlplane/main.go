// Command build-controlplane builds kube-apiserver, kubectl and
// kube-controller-manager for the real-control-plane test tier into their
// cache folder (controlplane.BinDir): the explicit step `make realcp-build`
// runs before the tests. Run it from tools/testbed/realcp.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/sbx-dev/sbx/tools/testbed/realcp/controlplane"
)

func main() {
	log.SetFlags(log.Ltime)
	log.SetPrefix("realcp-build: ")
	out := flag.String("o", "", "folder for the binaries (default $"+controlplane.EnvBinDir+" or the user cache folder)")
	printDir := flag.Bool("print-dir", false, "print the folder the binaries go to and exit")
	flag.Parse()

	dir := *out
	if dir == "" {
		d, err := controlplane.BinDir()
		if err != nil {
			log.Fatal(err)
		}
		dir = d
	}
	if *printDir {
		fmt.Println(dir)
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := controlplane.Build(ctx, controlplane.BuildOptions{BinDir: dir, Logf: log.Printf}); err != nil {
		log.Fatal(err)
	}
}
