# Enclave — the two commands that matter: `make run` and `make test`.
GO        ?= go
TAGS      ?= goolm
DATA      ?= ./data
BIN       ?= bin/enclave
# The release this tree is (bump on release); builds between releases are
# RELEASE-dev+COMMIT, so server_version is a version, not a bare hash.
RELEASE   := 0.1.0
VERSION   ?= $(RELEASE)-dev+$(shell git describe --always --dirty 2>/dev/null || echo unknown)
LDFLAGS   := -s -w -X enclave/internal/server.Version=$(VERSION)

.PHONY: run build test test-go test-node lint fmt vet bench clean notice dist

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
	CGO_ENABLED=0 $(GO) test -tags $(TAGS) -count=1 -timeout 25m ./...

## vet: with and without the goolm tag, so no untagged file leans on a goolm-only helper
vet:
	$(GO) vet -tags $(TAGS) ./...
	$(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

lint: vet
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 -tags $(TAGS) ./...

## notice: regenerate NOTICE (the licences of the modules in the binary) after changing go.mod
notice:
	UPDATE_NOTICE=1 $(GO) test -tags $(TAGS) -count=1 -run '^TestNotice$$' ./test

## dist: release tarball dist/out/enclave-VERSION-OS-ARCH.tar.gz (static binary,
## systemd unit, Containerfile, docs, SHA256SUMS inside) and its .sha256 beside it
DIST_OS   ?= $(shell $(GO) env GOOS)
DIST_ARCH ?= $(shell $(GO) env GOARCH)
DIST_OUT  ?= dist/out
DIST_NAME := enclave-$(VERSION)-$(DIST_OS)-$(DIST_ARCH)
DIST_DIR  := $(DIST_OUT)/$(DIST_NAME)
dist:
	rm -rf $(DIST_DIR) $(DIST_OUT)/$(DIST_NAME).tar.gz $(DIST_OUT)/$(DIST_NAME).tar.gz.sha256
	mkdir -p $(DIST_DIR)/bin $(DIST_DIR)/docs
	CGO_ENABLED=0 GOOS=$(DIST_OS) GOARCH=$(DIST_ARCH) $(GO) build -tags $(TAGS) -trimpath -ldflags '$(LDFLAGS)' -o $(DIST_DIR)/bin/enclave ./cmd/enclave
	cp dist/enclave.service dist/Containerfile README.md LICENSE NOTICE CHANGELOG.md $(DIST_DIR)/
	cp docs/*.md $(DIST_DIR)/docs/
	cd $(DIST_DIR) && find . -type f ! -name SHA256SUMS | LC_ALL=C sort | sed 's|^\./||' | xargs sha256sum > SHA256SUMS
	tar -C $(DIST_OUT) --owner=0 --group=0 --numeric-owner --sort=name -czf $(DIST_OUT)/$(DIST_NAME).tar.gz $(DIST_NAME)
	cd $(DIST_OUT) && sha256sum $(DIST_NAME).tar.gz > $(DIST_NAME).tar.gz.sha256
	rm -rf $(DIST_DIR)
	@echo $(DIST_OUT)/$(DIST_NAME).tar.gz

clean:
	rm -rf bin dist/out
