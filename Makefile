# anqi-edge. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go

.PHONY: help build test demo fake

help:
	@echo "build  - go build -o anqi-edge ."
	@echo "test   - go test -race ./... (needs redis-server; see .ci/run)"
	@echo "demo   - fake AnqiCMS on :8001 + anqi-edge on :8080, with example curl lines"
	@echo "bench  - load benchmark against nginx proxy_cache (run 'make bench-deps' once)"

build:
	$(GO) build -o anqi-edge .

test:
	$(GO) test -race ./...

fake:
	$(GO) build -o fake-anqicms ./cmd/fake-anqicms

# demo runs a fake AnqiCMS and anqi-edge in the foreground; Ctrl-C stops both.
demo: build fake
	@bash deploy/demo.sh
