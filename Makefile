# spritefwd: make demo to try it, make test to check it.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# The commit, +dirty with uncommitted changes: Go's own VCS stamp is missing
# in a git worktree and wherever GOFLAGS has -buildvcs=false.
COMMIT    ?= $(shell git rev-parse HEAD 2>/dev/null)$(shell [ -z "$$(git status --porcelain 2>/dev/null)" ] || echo +dirty)
LDFLAGS   := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
FUZZTIME  ?= 30s
# make test fuzzes each target for less: fourteen targets, each with its
# own build, cost 17.5 s apiece at 15 s, the largest phase after the -race
# pass. CI keeps no corpus between runs, so each run fuzzes afresh from the
# committed seeds; make fuzz (or FUZZTIME=10m) fuzzes for longer.
TEST_FUZZTIME ?= 10s
# Test binaries run at once. Most end-to-end time is spent waiting on wakes,
# drops and resume windows, so four keep two cores busier than two do.
TEST_P    ?= 4
DURATION  ?= 10m
PKGS      := ./...
TOOLS     := $(CURDIR)/bin/tools
NFPM_VERSION       := v2.45.2
GORELEASER_VERSION := v2.15.1
NFPM       := $(TOOLS)/nfpm-$(NFPM_VERSION)/nfpm
GORELEASER := $(TOOLS)/goreleaser-$(GORELEASER_VERSION)/goreleaser

.PHONY: all build demo test test-deps race-others race-tunnel-mux race-tunnel-rest cross unit e2e e2e-small-messages fuzz soak lint bench bench-wan goinstall-test package-test release-check release-snapshot clean

all: build

## build: the binary for this machine, plus the agent-only builds it uploads into linux/amd64 and linux/arm64 sprites
build:
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/spritefwd ./cmd/spritefwd
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -ldflags '$(LDFLAGS)' -o bin/spritefwd-agent-linux-amd64 ./cmd/spritefwd-agent
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -ldflags '$(LDFLAGS)' -o bin/spritefwd-agent-linux-arm64 ./cmd/spritefwd-agent

## demo: the embedded emulator, a demo sprite and forwards to it (Ctrl-C to stop)
demo:
	$(GO) run ./cmd/spritefwd demo

## test: lint, every test with -race (end-to-end ones included), each fuzz target, a 2-minute soak
# apt-get (on a clean machine) and the compiler overlap: neither needs the
# other. So do the soak and the second end-to-end pass: each keeps about one
# of two cores busy, and the soak's length is fixed.
test:
	$(MAKE) -j3 --output-sync=target test-deps lint cross
	$(MAKE) -j3 --output-sync=target race-others race-tunnel-mux race-tunnel-rest
	$(MAKE) fuzz FUZZTIME=$(TEST_FUZZTIME)
	$(MAKE) -j2 --output-sync=target e2e-small-messages soak DURATION=2m

# The -race pass in three runs at once: every package but tunnel (TEST_P
# at a time), and tunnel's tests in two halves. Run whole, tunnel alone
# was the pass's last two minutes on one busy core; the halves keep both
# cores busy to the end. -run and -skip with one pattern put each test in
# exactly one half.
TUNNEL_HALF := TestE2EMux|TestE2EResume
race-others:
	$(GO) test -race -count=1 -p $(TEST_P) -timeout 10m $$($(GO) list $(PKGS) | grep -v '/tunnel$$')
race-tunnel-mux:
	$(GO) test -race -count=1 -timeout 10m -run '$(TUNNEL_HALF)' ./tunnel/
race-tunnel-rest:
	$(GO) test -race -count=1 -timeout 10m -skip '$(TUNNEL_HALF)' ./tunnel/

## soak: the daemon under load and chaos for DURATION; prints what was delivered, reset and lost
soak: test-deps
	$(GO) test -run '^TestSoak$$' -v -count=1 -timeout 0 ./soak/ -args -duration=$(DURATION)

## cross: the code must build for macOS and Windows too
cross:
	GOOS=darwin GOARCH=arm64 $(GO) build ./...
	GOOS=windows GOARCH=amd64 $(GO) build ./...

test-deps:
	./scripts/install-test-deps.sh

## unit: the tests that need no external programs
unit:
	$(GO) test -race -count=1 -skip 'TestE2E' $(PKGS)

## e2e: only the end-to-end tests with real clients and servers
e2e: test-deps
	$(GO) test -race -count=1 -run 'TestE2E' -v $(PKGS)

## e2e-small-messages: the end-to-end tests again, with the default config, against an emulator that reads at most 1,024 bytes per message, as the in-sprite server of November 2025 does. Without -race: the same code ran under it in the first pass. Skipped: a latency comparison and shell completion, where message sizes play no part. Four parallel tests at a time: without -race they wait far more than they compute (95 s against 122 s at two)
e2e-small-messages: test-deps
	SPRITEFWD_SIM_MAX_MESSAGE=1024 $(GO) test -count=1 -p $(TEST_P) -parallel 4 -timeout 10m -run 'TestE2E|TestMessageLimit' -skip 'TestE2EMuxSetupVersusDirect|TestE2ECompletion' $(PKGS)

## fuzz: each fuzz target for FUZZTIME
fuzz:
	GO=$(GO) ./scripts/fuzz.sh $(FUZZTIME) ./config/:FuzzParse ./config/:FuzzParseRule \
		./sprites/:FuzzParseInitResponse ./sprites/:FuzzErrorBody ./sprites/:FuzzFrameWriter \
		./sprites/spritestest/:FuzzParseMap ./mux/:FuzzFrame ./mux/:FuzzHello \
		./control/:FuzzParseTarget ./socks/:FuzzRequest ./procnet/:FuzzParse ./tunnel/:FuzzAutoState ./tunnel/:FuzzAgentRecord ./mux/:FuzzUnseal

## lint: go vet, and gofmt must have nothing to say
lint:
	$(GO) vet $(PKGS)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

## bench: throughput, setup latency, 10k idle connections and pgbench, against direct, socat and a bare Go relay in the same run
bench: test-deps
	$(GO) test -run '^TestBench$$' -v -count=1 -timeout 0 ./bench/ -args -out=$(CURDIR)/bench/results.json
	$(GO) test -run '^$$' -bench . -benchtime 5x ./tunnel/

## bench-wan: connection setup (in round trips), a mux forward's first connection, throughput (as a fraction of the link), one stream against direct mode, the daemon's RSS with 10,000 idle and 8 bulk mux streams, scp and pgbench, mux on a quiet session and resumption's pause through an in-process WAN shaper at 50-300 ms and 20-1000 Mbit/s, to TLS; about 30 minutes
bench-wan: test-deps
	$(GO) test -run '^(TestShaper|TestBenchWAN)$$' -v -count=1 -timeout 30m ./bench/ -args -out=$(CURDIR)/bench/results-wan.json

## goinstall-test: go install …/cmd/spritefwd@latest from a file:// module proxy serving the committed tree, with empty caches; spritefwd version must name it (about 3 minutes, network for dependencies)
goinstall-test:
	GO=$(GO) ./scripts/goinstall-test.sh

## package-test: build the .deb with nfpm and install, upgrade, remove and purge it on this machine (root; refuses to replace a spritefwd it did not install)
package-test: $(NFPM)
	GO=$(GO) NFPM=$(NFPM) ./scripts/package-test.sh

## release-check: goreleaser check on .goreleaser.yaml
release-check: $(GORELEASER)
	$(GORELEASER) check

## release-snapshot: every release artefact in dist/ (archives, checksums, .deb, .rpm, Homebrew formula), published nowhere
release-snapshot: $(GORELEASER)
	SPRITEFWD_COMMIT=$(COMMIT) $(GORELEASER) release --snapshot --clean

# The packaging tools, pinned; built once into bin/tools (goreleaser takes a
# long time to build from scratch: see the README's Releases).
$(NFPM):
	GOBIN=$(dir $@) $(GO) install github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION)
$(GORELEASER):
	GOBIN=$(dir $@) $(GO) install github.com/goreleaser/goreleaser/v2@$(GORELEASER_VERSION)

clean:
	rm -rf bin dist completions
