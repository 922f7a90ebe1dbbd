# Enclave — the two commands that matter: `make run` and `make test`.
GO        ?= go
TAGS      ?= goolm
DATA      ?= ./data
BIN       ?= bin/enclave
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X enclave/internal/server.Version=$(VERSION)

.PHONY: run build test test-go test-node lint fmt vet bench clean notice

## run: build and serve on 127.0.0.1:8008 with SQLite under ./data (created on first start)
run: build
	./$(BIN) serve --data $(DATA)

## build: static binary, no cgo
build:
	CGO_ENABLED=0 $(GO) build -tags $(TAGS) -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/enclave

## test: every test, against SQLite and PostgreSQL (ENCLAVE_TEST_POSTGRES, default 127.0.0.1:5432)
test: vet test-node test-go

## test-node: install the Node interop test's packages (matrix-js-sdk, pinned by
## test/node/package-lock.json); TestE2EENode in test/ runs it against each store
test-node:
	cd test/node && npm ci --no-audit --no-fund

test-go:
	CGO_ENABLED=0 $(GO) test -tags $(TAGS) -count=1 -timeout 15m ./...

vet:
	$(GO) vet -tags $(TAGS) ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

lint: vet
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 -tags $(TAGS) ./...

## notice: regenerate NOTICE (the licences of the modules in the binary) after changing go.mod
notice:
	UPDATE_NOTICE=1 $(GO) test -tags $(TAGS) -count=1 -run '^TestNotice$$' ./test

clean:
	rm -rf bin
