GO ?= go

.PHONY: all test build demo bench fmt vet

all: build

test:
	$(GO) vet ./... && $(GO) test -race -count=1 -timeout 20m ./...

build:
	$(GO) build -o bin/rowcast ./cmd/rowcast

# Built first: "go run" exits 1 when interrupted, the binary exits 0.
demo: build
	bin/rowcast demo

bench:
	$(GO) run ./cmd/rowcast-bench

fmt:
	gofmt -w $$(git ls-files --cached --others --exclude-standard '*.go')

vet:
	$(GO) vet ./...
