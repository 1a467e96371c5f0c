GO ?= go

.PHONY: all test build image demo bench fmt vet

all: build

# The load tests run again without the race detector, at full size.
LOAD_TESTS = TestResumeUnderLoad|TestLargeTransaction

test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...
	$(GO) test -count=1 -timeout 20m -run '$(LOAD_TESTS)' ./integration/

build:
	$(GO) build -o bin/rowcast ./cmd/rowcast

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
