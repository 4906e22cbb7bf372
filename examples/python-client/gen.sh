#!/usr/bin/env bash
# Generate the Python stubs of rlaif's API (every file under proto/) and of gRPC server reflection
# (v1 and v1alpha, the .proto files that @grpc/reflection ships in node_modules) into OUT_DIR
# (default: gen/ next to this script, git-ignored). Needs protoc >= 3.15 (proto3 `optional`) and
# grpc_python_plugin: on Debian 12, `apt-get install protobuf-compiler protobuf-compiler-grpc`.
# PROTOC and GRPC_PYTHON_PLUGIN override the tools' paths.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$here/gen}
protoc=${PROTOC:-protoc}
plugin=${GRPC_PYTHON_PLUGIN:-/usr/bin/grpc_python_plugin}

die() {
  echo "gen.sh: $*" >&2
  exit 1
}
command -v "$protoc" >/dev/null || die "protoc not found (Debian: apt-get install protobuf-compiler)"
[[ -x $plugin ]] || die "grpc_python_plugin not found at $plugin (Debian: apt-get install protobuf-compiler-grpc)"
# "libprotoc 3.21.12"; releases after 3.20 are numbered 21.x, 22.x, ... (printed as 3.21.x or 22.x).
version=$("$protoc" --version | awk '{print $2}')
IFS=. read -r major minor _ <<<"$version"
if ((major < 3 || (major == 3 && minor < 15))); then
  die "protoc $version is too old: proto3 'optional' fields need protoc >= 3.15 (grpc_tools' bundled protoc is 3.5 on Debian; use protobuf-compiler)"
fi
reflection=$root/node_modules/@grpc/reflection/build/proto/grpc/reflection
[[ -f $reflection/v1/reflection.proto ]] || die "$reflection/v1/reflection.proto missing: run npm ci in $root"

rm -rf "$out"
mkdir -p "$out"
cd "$root/proto"
mapfile -t files < <(find rlaif -name '*.proto' | sort)
cd "$root"
# The reflection protos are mapped to grpc_reflection_v1*/ so their modules do not land inside a
# top-level grpc/ directory, which would collide with the grpc package itself.
"$protoc" -I proto \
  -I "grpc_reflection_v1=$reflection/v1" -I "grpc_reflection_v1alpha=$reflection/v1alpha" \
  --python_out "$out" --grpc_out "$out" --plugin=protoc-gen-grpc="$plugin" \
  grpc_reflection_v1/reflection.proto grpc_reflection_v1alpha/reflection.proto "${files[@]/#/proto/}"
echo "gen.sh: stubs of ${#files[@]} rlaif files and the reflection API in $out"
