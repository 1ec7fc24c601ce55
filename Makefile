# anqi-edge. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go

.PHONY: help build test demo fake image

# The container image: one name everywhere (deploy/docker-compose.yml and
# deploy/k8s/deployment.yaml use it; a test in deploy/ keeps them equal).
VERSION ?= 0.1.0
IMAGE ?= anqi-edge/anqi-edge:$(VERSION)

help:
	@echo "build  - go build -o anqi-edge ."
	@echo "test   - go test -race ./... (needs redis-server; see .ci/run)"
	@echo "demo   - fake AnqiCMS on :8001 + anqi-edge on :8080, with example curl lines"
	@echo "image  - docker build the container image $(IMAGE)"
	@echo "bench  - load benchmark against nginx proxy_cache (run 'make bench-deps' once)"
	@echo "soak   - two replicas, Redis and the fake AnqiCMS under load and faults for SOAK_DURATION (default 15m)"
	@echo "bench-manyusers - 5,000 polling users, sends and admin replies: two anqi-edge replicas (CDC) vs nginx (~4 min)"
	@echo "bench-cdc - commit-to-visible delay of admin replies: anqi-edge with CDC, without, nginx (~4 min)"
	@echo "fuzz   - each fuzz target in turn for FUZZTIME (default 10m), one worker each"

build:
	$(GO) build -o anqi-edge .

test:
	$(GO) test -race ./...

fake:
	$(GO) build -o fake-anqicms ./cmd/fake-anqicms

image:
	docker build -f deploy/Dockerfile --build-arg VERSION=$(VERSION) -t $(IMAGE) .

# demo runs a fake AnqiCMS and anqi-edge in the foreground; Ctrl-C stops both.
demo: build fake
	@bash deploy/demo.sh

# bench-deps installs what `make bench` runs beside anqi-edge (Debian/Ubuntu).
# nginx-light is enough: proxy_cache is part of nginx's core http proxy.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: bench bench-deps bench-manyusers bench-cdc
bench-deps:
	$(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx-light wrk redis-server

# bench runs the load harness end to end (~5 min) and writes bench/README.md.
# Shorter runs: BENCH_DURATION=3s BENCH_ROUNDS=1 make bench; BENCH_WRITE=0 leaves the README alone.
# bench/ is a Go module of its own (anqi-edge/bench, the root by replace),
# so the product's go.mod carries only what the product needs.
bench:
	cd bench && BENCH_INVOKED="make bench" $(GO) run ./cmd/edgebench

# soak runs two anqi-edge replicas, a private redis-server and the fake
# AnqiCMS under a steady mixed load for SOAK_DURATION (default 15m), killing
# Redis every 60 s and restarting AnqiCMS every 90 s, and checks every answer
# (bench/README.md, "Soak"). Needs redis-server. Exits non-zero on a violation.
.PHONY: soak
soak:
	cd bench && $(GO) run ./cmd/soak

# bench-manyusers: 5,000 users polling their own orders through two anqi-edge
# replicas sharing Redis, then nginx (~4 min), while 2 admin replies/s go into
# the fake's private MariaDB, read by anqi-edge's [cdc]; prints a table for
# bench/README.md. Needs mariadb-server as well as bench-deps, unless
# BENCH_MU_FLAGS="-mu-admin 0" (in-memory fake, no admin changes).
BENCH_MU_FLAGS ?=
bench-manyusers:
	cd bench && $(GO) run ./cmd/edgebench -manyusers $(BENCH_MU_FLAGS)

# bench-cdc measures commit-to-visible (issue 11): admin replies written to a
# private MariaDB while customers watch or poll, for anqi-edge with CDC,
# without it (ttl-bound) and nginx proxy_cache; writes bench/README.md's
# "Commit to visible (CDC)" table. Needs mariadb-server as well as bench-deps.
# Shorter: BENCH_CDC_FLAGS="-duration 10s" make bench-cdc; every flag: go run ./cmd/cdcbench -h (in bench/).
BENCH_CDC_FLAGS ?=
bench-cdc:
	cd bench && BENCH_INVOKED="make bench-cdc $(BENCH_CDC_FLAGS)" $(GO) run ./cmd/cdcbench -readme README.md $(BENCH_CDC_FLAGS)

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
