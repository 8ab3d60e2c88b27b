# phogate Makefile. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
CONFIG ?= envoy/phogate.yaml
PKGS := ./...

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build the binaries into bin/.
	$(GO) build -o $(BIN)/ ./cmd/... ./test/cmd/...

.PHONY: run
run: build ## Run the demo stack: gateway, fake providers and the Envoy stand-in (or envoy) on :8080.
	$(BIN)/devstack -config $(CONFIG) -phogate $(BIN)/phogate

.PHONY: test
test: ## Run all tests with the race detector (starts Redis/PostgreSQL when unreachable).
	$(GO) test -race -count=1 -timeout 14m $(PKGS)

.PHONY: services-stop
services-stop: ## Stop the Redis/PostgreSQL instances the tests started (if they started any).
	test/services.sh stop

.PHONY: bench
bench: ## Run the benchmarks (no race detector) and print the results.
	$(GO) test -run '^$$' -bench . -benchmem -timeout 20m $(PKGS)

.PHONY: fuzz
fuzz: ## Run each fuzz target briefly.
	$(GO) test -run '^$$' -fuzz FuzzParseChatRequest -fuzztime 15s ./internal/openai/
	$(GO) test -run '^$$' -fuzz FuzzSSE -fuzztime 15s ./internal/openai/

.PHONY: eval-semantic
eval-semantic: ## Evaluate the semantic cache on the developer pairs in ../shared/data.
	$(GO) run ./cmd/semantic-eval -data ../shared/data

.PHONY: eval-routing
eval-routing: ## Evaluate model routing on the developer data in ../shared/data.
	$(GO) run ./cmd/routing-eval -data ../shared/data

.PHONY: load
load: ## Send chat load to a running gateway (make run) and print latencies; LOADFLAGS adds flags.
	$(GO) run ./cmd/phogate-load $(LOADFLAGS)

.PHONY: fmt
fmt: ## Format the code.
	gofmt -w $$(git ls-files '*.go')

.PHONY: lint
lint: ## Run go vet, staticcheck and the house grep checks.
	$(GO) vet $(PKGS)
	$(GO) tool staticcheck $(PKGS)
	@! git grep -nE 'interface\{\}' -- '*.go' || (echo 'use any instead of interface{}'; exit 1)
	@! git grep -nE 'time\.After\(' -- '*.go' ':!*_test.go' || (echo 'no time.After outside tests'; exit 1)
	@! git grep -nE '(TODO|FIXME|XXX)\s*$$|FIXME|XXX' -- '*.go' || (echo 'write TODO: what and why'; exit 1)
	@! git grep -nE 'TODO' -- '*.go' | grep -vE 'TODO: [^ ]|context\.TODO\(\)' \
		|| (echo 'write TODO: what and why'; exit 1)
	@! git grep -nE '^\s*(import\s+)?([A-Za-z0-9_.]+\s+)?"github.com/envoyproxy/go-control-plane/envoy/' -- '*.go' \
		| grep -vE ':\s*(import\s+)?(_|v3[a-z0-9]+(pb|grpc))\s+"' \
		|| (echo 'alias Envoy protos as v3<name>pb or v3<name>grpc'; exit 1)

.PHONY: check
check: lint ## Format diff, lint and a go mod tidy diff.
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) mod tidy -diff
