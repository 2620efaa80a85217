# sbx — build, test, lint, bench. `make help` lists the targets.
SHELL := /usr/bin/env bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
BIN := bin/sbx
# Packages with concurrent code run under the race detector.
RACE_PKGS := ./tunnel/... ./relay/... ./daemon/... ./cluster/portforward/... ./tools/testbed/pftest/... ./tools/testbed/pfbench/... ./tools/testbed/tunnelbench/... ./tools/testbed/linkshape/...
FUZZTIME ?= 30s

.PHONY: help build test test-race test-unit test-istio test-real realcp-build test-fuzz lint cross bench bench-compare fuzz demo image image-push clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## build bin/sbx with the version stamped in
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/sbx

test: lint test-unit test-race test-fuzz test-istio test-real ## everything CI runs: lint, all tests, race tests, Istio conformance, the real control plane

# tools/image is its own module (go-containerregistry stays out of the
# product's module graph), so ./... does not reach it.
# Tests that measure (the fault matrix, the relay under a flood) write
# their figures to SBX_FIGURES_DIR; they are printed after a passing run,
# which go test alone would keep quiet.
test-unit: ## all packages' tests, and the release tool's; prints the fault matrix's figures
	@dir=$$(mktemp -d); echo "$(GO) test -count=1 -timeout 10m ./..."; \
	SBX_FIGURES_DIR=$$dir $(GO) test -count=1 -timeout 10m ./...; rc=$$?; \
	cat $$dir/*.txt 2>/dev/null; rm -rf $$dir; exit $$rc
	$(GO) -C tools/image test -count=1 -timeout 10m ./...

test-race: ## tunnel, relay, daemon and the port-forward dialer under the race detector
	$(GO) test -count=1 -race -timeout 10m $(RACE_PKGS)

# The Istio conformance tier: sbx's route plans judged by Istio's own
# control-plane code (its own go.mod, so the product never depends on
# istio.io/istio). The first build compiles Istio: ~10 min on 2 cores;
# later runs use the build cache (~10 s).
test-istio: ## mesh routes judged by Istio's control plane (testdata/istio)
	@echo "test-istio: building Istio's control plane for the conformance tests (~10 min the first time, cached after)"
	cd testdata/istio && $(GO) vet ./... && $(GO) test -count=1 -timeout 30m ./...

# The real-control-plane tier (tools/testbed/realcp, its own go.mod so
# k8s.io/kubernetes never enters the product's module graph): sbx's
# cluster code as a developer bound to deploy/rbac.yaml, against
# kube-apiserver and kube-controller-manager built from k8s.io/kubernetes
# and Debian's etcd; and the real kubectl against the simulated cluster of
# `sbx demo --keep` (kubectlsim: get, describe, logs, port-forward, apply,
# auth can-i; ~2 s). realcp-build is the explicit build step (kubectl is
# built with the control plane), into the user cache folder
# (~/.cache/sbx-realcp/<version>-<os>-<arch>/bin): ~10 min with an empty
# build cache on 2 cores, ~1 min more for kubectl, ~5 s when up to date.
REALCP := tools/testbed/realcp

realcp-build: ## build kube-apiserver, kube-controller-manager and kubectl for test-real (~10 min the first time)
	$(GO) -C $(REALCP) run ./cmd/build-controlplane

test-real: realcp-build ## sbx against a real kube-apiserver, controller-manager and etcd, with a node stand-in (needs etcd-server, iproute2, root); real kubectl against the demo cluster
	@dir=$$(mktemp -d); echo "$(GO) -C $(REALCP) test -count=1 -v -timeout 20m ./..."; SBX_FIGURES_DIR=$$dir $(GO) -C $(REALCP) test -count=1 -v -timeout 20m ./...; rc=$$?; cat $$dir/*.txt 2>/dev/null; rm -rf $$dir; exit $$rc

# Other GOOS values lint vets for: platform code sits behind build tags, so
# only a vet (which type-checks tests too) under each GOOS sees it. Measured
# with a warm build cache: ~2 s each, ~6 s each after an API change in
# tunnel; a cold cache pays ~3.5 min per GOOS once, like the first build.
LINT_GOOS := darwin windows

lint: ## gofmt, and go vet for linux, darwin and windows
	@out=$$(gofmt -l $$( (git ls-files '*.go'; git ls-files --others --exclude-standard '*.go') 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	@$(GO) mod tidy -diff >/dev/null || { echo "go.mod is not tidy: run go mod tidy"; exit 1; }
	@$(GO) -C tools/image mod tidy -diff >/dev/null || { echo "tools/image/go.mod is not tidy (it follows the product's go.mod through its replace): run (cd tools/image && go mod tidy)"; exit 1; }
	@$(GO) -C $(REALCP) mod tidy -diff >/dev/null || { echo "$(REALCP)/go.mod is not tidy (it follows the product's go.mod through its replace): run (cd $(REALCP) && go mod tidy)"; exit 1; }
	$(GO) vet ./...
	$(GO) -C tools/image vet ./...
	$(GO) -C $(REALCP) vet ./...
	@for os in $(LINT_GOOS); do \
	  echo "GOOS=$$os go vet ./..."; CGO_ENABLED=0 GOOS=$$os $(GO) vet ./... || exit 1; \
	done

# The platforms sbx must build for (issue 8), without cgo as released.
CROSS_PLATFORMS := linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64 windows/arm64

cross: ## compile every package for linux, darwin and windows on amd64 and arm64 (CGO_ENABLED=0)
	@for p in $(CROSS_PLATFORMS); do \
	  os=$${p%/*}; arch=$${p#*/}; \
	  echo "GOOS=$$os GOARCH=$$arch go build ./..."; \
	  CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build ./... || exit 1; \
	done

bench: build ## tunnel and port-forward benchmarks (then the latter through shaped links): ratios measured in one run
	$(BIN) bench tunnel
	@if $(BIN) bench --help 2>/dev/null | grep -q portforward; then $(BIN) bench portforward; fi
	$(BIN) bench portforward --links lan,wifi,vpn,intercontinental

# Both benches for a base revision and the working tree, runs interleaved
# (base, new, base, new, ...) so load drift hits both sides; prints each
# ratio's median and min-max per side and new/base. tools/benchcompare has
# the knobs (BENCHES, PF_ARGS, PF_N, OUT).
BASE ?= HEAD~1
N ?= 3
bench-compare: ## bench at BASE (default HEAD~1) and the working tree, interleaved N times (default 3); ratio table
	tools/benchcompare '$(BASE)' '$(N)'

# Fuzz targets are found by name in the test files (no per-package build
# to list them); `go test -fuzz` runs one target per invocation. Seeds
# (testdata/fuzz and f.Add) also run in every plain `go test`.
FUZZ_TARGETS = grep -rHo --include='*_test.go' --exclude-dir=testdata '^func Fuzz[A-Za-z0-9_]*' . | sed 's|^\(.*\)/[^/]*_test.go:func |\1 |' | sort

fuzz: ## run every fuzz target for FUZZTIME each (default 30s)
	@start=$$(date +%s); n=0; \
	while read -r dir f; do \
	  echo "== $$dir $$f"; n=$$((n+1)); \
	  $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$dir || exit 1; \
	done < <($(FUZZ_TARGETS)); \
	echo "fuzz: $$n targets, $(FUZZTIME) each, $$(( $$(date +%s) - start ))s"

# The short run make test includes: each target's seed corpus and
# FUZZ_SHORT new inputs. A count, not a duration: Go 1.26's fuzz
# coordinator can fail a target with a bare "context deadline exceeded"
# when a duration budget ends while a worker is mid-input (golang/go#75804,
# fixed in Go 1.27), which a count budget never hits.
FUZZ_SHORT ?= 2000x
test-fuzz: ## every fuzz target for FUZZ_SHORT (2000 inputs): the short run in make test
	@$(MAKE) --no-print-directory fuzz FUZZTIME=$(FUZZ_SHORT)

demo: ## the embedded default: a simulated cluster, a sandbox, requests with and without the key
	@echo "building sbx (the first build compiles client-go and Istio's API: ~10 min on 2 cores, seconds after that)..."
	@CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/sbx
	$(BIN) demo

# The image: static sbx binaries for each platform on an empty base, written
# as an OCI layout (no Docker engine needed), tagged $(VERSION).
IMAGE_DIR := dist/image
IMAGE_PLATFORMS := linux/amd64 linux/arm64
IMAGE_NAME := sbx

image: ## OCI image (linux/amd64+arm64, non-root, no shell) of sbx in dist/image, tagged $(VERSION)
	@for p in $(IMAGE_PLATFORMS); do \
	  os=$${p%/*}; arch=$${p#*/}; out=dist/bin/$$os-$$arch/sbx; \
	  echo "go build $$out ($$p, $(VERSION))"; \
	  CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $$out ./cmd/sbx || exit 1; \
	done
	$(GO) -C tools/image run . build --version '$(VERSION)' --out $(CURDIR)/$(IMAGE_DIR) \
	  $(foreach p,$(IMAGE_PLATFORMS),--binary $(p)=$(CURDIR)/dist/bin/$(subst /,-,$(p))/sbx)

image-push: image ## push the image to $(REGISTRY)/sbx:$(VERSION), e.g. make image-push REGISTRY=ghcr.io/sbx-dev
	@if [ -z "$(REGISTRY)" ]; then echo "usage: make image-push REGISTRY=ghcr.io/you (pushes \$$REGISTRY/$(IMAGE_NAME):$(VERSION))"; exit 2; fi
	$(GO) -C tools/image run . push --layout $(CURDIR)/$(IMAGE_DIR) --ref '$(REGISTRY)/$(IMAGE_NAME):$(VERSION)'

clean: ## remove build outputs
	rm -rf bin dist
