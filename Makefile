GO ?= go

.PHONY: all test build image demo bench fmt vet fuzz chaos failover

all: build

# The load tests run again without the race detector, at full size.
LOAD_TESTS = TestResumeUnderLoad|TestLargeTransaction

test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 30m ./...
	$(GO) test -count=1 -timeout 20m -run '$(LOAD_TESTS)' ./integration/
	$(MAKE) fuzz FUZZTIME=$(CI_FUZZTIME)

# Every fuzz target (the decoders of everything that reaches rowcast from
# outside) runs for FUZZTIME, one after another on one worker; "make test"
# runs each for a number of inputs, not a time: a time budget shorter than
# the corpus's baseline run fails with "context deadline exceeded" on a
# busy machine. A crash is saved under the package's testdata/fuzz/ and
# fails the run. For a long run: make fuzz FUZZTIME=10m
FUZZTIME ?= 1m
CI_FUZZTIME ?= 3000x

fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
		for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "--- fuzz $$pkg $$t ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) -parallel 1 $$pkg; \
		done; \
	done

build:
	$(GO) build -o bin/rowcast ./cmd/rowcast

# The fault-injection oracle test (integration/chaos_test.go) at full
# length: CHAOS_DURATION per capture mode, about twice that plus 5 minutes
# in all. Its figures go to out/chaos.json and replace the generated
# section of RELIABILITY.md. "make test" runs it for 60s per mode.
CHAOS_DURATION ?= 20m

chaos:
	mkdir -p out
	ROWCAST_CHAOS_DURATION=$(CHAOS_DURATION) ROWCAST_CHAOS_REPORT=$(CURDIR)/out/chaos.json \
		ROWCAST_CHAOS_MARKDOWN=$(CURDIR)/RELIABILITY.md \
		$(GO) test -count=1 -timeout 120m -run '^TestChaos$$' -v ./integration/

# Cluster-mode failover measured (integration/cluster_test.go): the
# capturing node of three is killed with SIGKILL FAILOVERS times while
# writers commit; every client is checked against the table, and the time
# until another node captures goes to out/failover.json (its distribution
# is in README.md, "Running more than one node"). "make test" runs it with 2 kills.
FAILOVERS ?= 25

failover:
	mkdir -p out
	ROWCAST_TEST_FAILOVERS=$(FAILOVERS) ROWCAST_TEST_FAILOVER_OUT=$(CURDIR)/out/failover.json \
		$(GO) test -count=1 -timeout 60m -run '^TestClusterLeaderKill$$' -v ./integration/

# The container image (static binary on an empty base, non-root), built
# offline with podman; see build/image.sh and README "Run it in a container".
IMAGE ?= rowcast:local

image:
	GO=$(GO) build/image.sh $(IMAGE)

# Built first: "go run" exits 1 when interrupted, the binary exits 0.
demo: build
	bin/rowcast demo

bench:
	$(GO) run ./cmd/rowcast-bench

fmt:
	gofmt -w $$(git ls-files --cached --others --exclude-standard '*.go')

vet:
	$(GO) vet ./...
