#!/usr/bin/env bash
# gofmt, go vet and staticcheck, as CI runs them.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:$(go env GOPATH)/bin"
bad=$(gofmt -l $(git ls-files '*.go'))
[ -z "$bad" ] || { echo "not gofmt-formatted: $bad" >&2; exit 1; }
go vet ./...
staticcheck ./...
