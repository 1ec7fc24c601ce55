# anqi-edge. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go

.PHONY: help build test demo fake

help:
	@echo "build  - go build -o anqi-edge ."
	@echo "test   - go test -race ./... (needs redis-server; see .ci/run)"
	@echo "demo   - fake AnqiCMS on :8001 + anqi-edge on :8080, with example curl lines"
	@echo "bench  - load benchmark against nginx proxy_cache (run 'make bench-deps' once)"
	@echo "fuzz   - each fuzz target in turn for FUZZTIME (default 10m), one worker each"

build:
	$(GO) build -o anqi-edge .

test:
	$(GO) test -race ./...

fake:
	$(GO) build -o fake-anqicms ./cmd/fake-anqicms

# demo runs a fake AnqiCMS and anqi-edge in the foreground; Ctrl-C stops both.
demo: build fake
	@bash deploy/demo.sh

# bench-deps installs what `make bench` runs beside anqi-edge (Debian/Ubuntu).
# nginx-light is enough: proxy_cache is part of nginx's core http proxy.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: bench bench-deps
bench-deps:
	$(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx-light wrk redis-server

# bench runs the load harness end to end (~5 min) and writes bench/README.md.
# Shorter runs: BENCH_DURATION=3s BENCH_ROUNDS=1 make bench; BENCH_WRITE=0 leaves the README alone.
bench:
	BENCH_INVOKED="make bench" $(GO) run ./bench/cmd/edgebench

# fuzz runs every fuzz target in turn; the seeds (f.Add and testdata/fuzz)
# also run in `make test`. A failure writes its input under testdata/fuzz/.
FUZZTIME ?= 10m
FUZZ_TARGETS := anqicms:FuzzParseOrderID anqicms:FuzzWriteOrderIDs anqicms:FuzzIdentify \
	anqicms:FuzzRequestToken config:FuzzParse cache:FuzzEntryCodec cache:FuzzUnmarshalEntry

.PHONY: fuzz
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; echo "== ./$$pkg $$name $(FUZZTIME)"; \
		$(GO) test ./$$pkg/ -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -parallel 1; \
	done
