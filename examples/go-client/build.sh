#!/usr/bin/env bash
# Generate Go stubs of rlaif's Policy and Optimizer API from proto/ and build the client into
# OUT_DIR (default: .build/ next to this script, git-ignored), offline: GOPATH mode
# (GO111MODULE=off, GOPROXY=off) against the Go sources Debian installs under /usr/share/gocode.
# Debian 12 packages: golang-go protobuf-compiler protoc-gen-go protoc-gen-go-grpc
# golang-google-grpc-dev golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev.
# An existing GOPATH is searched before /usr/share/gocode; PROTOC_GEN_GO overrides the plugin.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$here/.build}
gen_go=${PROTOC_GEN_GO:-$(command -v protoc-gen-go || true)}
gen_grpc=$(command -v protoc-gen-go-grpc || true)

die() {
  echo "build.sh: $*" >&2
  exit 1
}
command -v go >/dev/null || die "go not found (Debian: apt-get install golang-go)"
command -v protoc >/dev/null || die "protoc not found (Debian: apt-get install protobuf-compiler)"
[[ -n $gen_grpc ]] || die "protoc-gen-go-grpc not found (Debian: apt-get install protoc-gen-go-grpc)"
[[ -n $gen_go ]] || die "protoc-gen-go not found (Debian: apt-get install protoc-gen-go)"
# Debian's protoc-gen-go-1-3 (1.3.5) predates proto3 `optional`; protoc-gen-go >= 1.20 prints a version.
"$gen_go" --version >/dev/null 2>&1 ||
  die "$gen_go is too old for proto3 optional fields: install Debian's protoc-gen-go (1.28, APIv2) instead of protoc-gen-go-1-3"

# One Go package per proto package; the proto files carry no go_package, so map them here.
map=""
for f in common/v1/types feedback/v1/feedback policy/v1/policy optimizer/v1/optimizer; do
  pkg=${f%%/*}v1
  map+="${map:+,}Mrlaif/$f.proto=rlaif.local/gen/$pkg;$pkg"
done
rm -rf "$out"
mkdir -p "$out/src"
cd "$root"
protoc -I proto --plugin=protoc-gen-go="$gen_go" --plugin=protoc-gen-go-grpc="$gen_grpc" \
  --go_out="$out/src" --go_opt="$map" --go-grpc_out="$out/src" --go-grpc_opt="$map" \
  proto/rlaif/common/v1/types.proto proto/rlaif/feedback/v1/feedback.proto proto/rlaif/policy/v1/policy.proto proto/rlaif/optimizer/v1/optimizer.proto
cd "$here"
GOPATH="$out${GOPATH:+:$GOPATH}:/usr/share/gocode" GO111MODULE=off GOPROXY=off GOFLAGS= GOCACHE="$out/cache" \
  go build -o "$out/go-client" .
echo "build.sh: $out/go-client"
