// Command image builds and pushes the sbx container image without a Docker
// engine: it puts prebuilt static sbx binaries on an empty base, one image
// per platform, under one OCI image index, written as an OCI layout
// directory. `make image` and `make image-push` run it.
//
//	go run ./tools/image build --version v1.2.3 --out dist/image \
//	    --binary linux/amd64=dist/bin/linux-amd64/sbx --binary linux/arm64=dist/bin/linux-arm64/sbx
//	go run ./tools/image push --layout dist/image --ref ghcr.io/sbx-dev/sbx:v1.2.3
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

const usage = `usage:
  image build --version VERSION --out DIR --binary OS/ARCH=PATH [--binary ...]
  image push --layout DIR --ref REGISTRY/REPO:TAG`

// parseAll parses flags and refuses anything left over: flag stops at the
// first word that is not a flag (a path without --binary, a value with a
// space in it), and that word and every flag after it would otherwise be
// ignored silently.
func parseAll(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected argument %q (every input is a flag)\n%s", fs.Name(), fs.Arg(0), usage)
	}
	return nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w\n%s", flag.ErrHelp, usage)
	}
	switch args[0] {
	case "build":
		fs := flag.NewFlagSet("image build", flag.ContinueOnError)
		fs.SetOutput(stderr)
		var o buildOptions
		fs.StringVar(&o.Version, "version", "", "version of the --binary files (not stamped by this tool); becomes the image tag and version label")
		fs.StringVar(&o.Out, "out", "dist/image", "OCI layout directory to (re)create")
		fs.StringVar(&o.SourceDateEpoch, "source-date-epoch", os.Getenv("SOURCE_DATE_EPOCH"), "seconds since 1970 for timestamps in the image (default 0: reproducible)")
		fs.Func("binary", "OS/ARCH=PATH of a static sbx binary, repeatable", func(v string) error {
			b, err := parseBinary(v)
			if err == nil {
				o.Binaries = append(o.Binaries, b)
			}
			return err
		})
		if err := parseAll(fs, args[1:]); err != nil {
			return err
		}
		desc, err := build(o)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote OCI layout %s: sbx:%s index %s (%s)\n", o.Out, desc.Tag, desc.Digest, strings.Join(desc.Platforms, ", "))
		return nil
	case "push":
		fs := flag.NewFlagSet("image push", flag.ContinueOnError)
		fs.SetOutput(stderr)
		var dir, ref string
		fs.StringVar(&dir, "layout", "dist/image", "OCI layout directory written by `image build`")
		fs.StringVar(&ref, "ref", "", "where to push, REGISTRY/REPO:TAG (credentials from the Docker config, e.g. ~/.docker/config.json)")
		if err := parseAll(fs, args[1:]); err != nil {
			return err
		}
		digest, err := push(ctx, dir, ref)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "pushed %s@%s\n", ref, digest)
		return nil
	}
	return fmt.Errorf("%w: unknown subcommand %q\n%s", flag.ErrHelp, args[0], usage)
}
