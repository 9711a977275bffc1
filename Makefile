# llmux — build, test and run. `make help` lists the targets.
SHELL := bash
.DEFAULT_GOAL := help

# Where scripts/setup.sh puts headers. A fixed path, so the Go build cache
# (and its 2-minute llama.cpp compile) is reused by every clone.
LLMUX_DEPS ?= $(HOME)/.cache/llmux/deps
# CPU code generation for ggml: native (this machine, fastest), portable
# (x86-64-v3: AVX2/FMA, for binaries that move), or baseline (no SIMD flags).
LLMUX_CPU ?= native

ifeq ($(LLMUX_CPU),native)
CPUFLAGS := -O3 -march=native -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
else ifeq ($(LLMUX_CPU),portable)
CPUFLAGS := -O3 -march=x86-64-v3
else ifeq ($(LLMUX_CPU),baseline)
CPUFLAGS := -O2
else
$(error LLMUX_CPU must be native, portable or baseline)
endif

export CGO_ENABLED := 1
export CGO_CPPFLAGS := -I$(LLMUX_DEPS)/include
export CGO_CFLAGS := $(CPUFLAGS)
export CGO_CXXFLAGS := $(CPUFLAGS)
export LLMUX_DEPS

VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X 'main.version=$(VERSION)' -X 'main.cpuTarget=$(LLMUX_CPU)' -X 'main.cpuFlags=$(CPUFLAGS)'
BIN := bin/llmux
ARGS ?=

.PHONY: help setup setup-build build serve test test-short fuzz bench vet env clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: ## install build dependencies, and the OpenAI Node SDK for the conformance test (idempotent)
	@bash scripts/setup.sh --node

setup-build: ## install build dependencies only (idempotent)
	@bash scripts/setup.sh

build: setup-build ## build bin/llmux
	go build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/llmux

serve: build ## set up, build and serve the embedded default model on :8080
	./$(BIN) serve $(ARGS)

test: setup build ## run every test (race detector on), each fuzz target for FUZZ_SMOKE, then the Kubernetes deployment's tests (deploy/kubernetes)
	go vet ./...
	LLMUX_REQUIRE_NODE=1 LLMUX_BIN=$(CURDIR)/$(BIN) go test -race -p 1 -count=1 -timeout 60m ./...
	$(MAKE) -s fuzz FUZZTIME=$(FUZZ_SMOKE)
	cd deploy/kubernetes && CGO_ENABLED=0 go vet ./...
	cd deploy/kubernetes && CGO_ENABLED=0 LLMUX_BIN=$(CURDIR)/$(BIN) go test -count=1 -timeout 20m ./...

# Fuzz targets: package and name. `make test` runs their seed corpora
# (testdata/fuzz and f.Add) as ordinary tests, then fuzzes each for
# FUZZ_SMOKE (a count of inputs: a duration can end in a spurious
# "context deadline exceeded" in Go 1.26, golang/go#75804); `make fuzz`
# fuzzes each for FUZZTIME.
FUZZ_TARGETS := ./openai:FuzzRequests ./chat:FuzzToolStream ./models:FuzzInspect ./engine:FuzzDetokenizer ./engine:FuzzChatTemplate ./server:FuzzSSEEncoder
FUZZTIME ?= 1m
FUZZ_SMOKE ?= 20000x

fuzz: setup-build ## run every fuzz target for FUZZTIME (default 1m)
	@for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; name=$${t##*:}; \
	  echo "fuzz $$name ($$pkg) for $(FUZZTIME)"; \
	  go test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; done

test-short: setup ## fast tests only
	go test -short -p 1 -count=1 ./...

bench: setup-build ## engine and scheduler benchmarks (see benchmarks/README.md)
	go test -run '^$$' -bench . -benchtime 3x -timeout 60m ./engine ./scheduler

vet: setup-build
	go vet ./...

env: ## print the environment for running go commands by hand
	@echo "export CGO_ENABLED=1 CGO_CPPFLAGS='$(CGO_CPPFLAGS)' CGO_CFLAGS='$(CGO_CFLAGS)' CGO_CXXFLAGS='$(CGO_CXXFLAGS)'"

clean:
	rm -rf bin
