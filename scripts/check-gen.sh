#!/usr/bin/env bash
# Fails when the committed generated code under services/core/gen differs from what
# `buf generate` produces from proto/ now (someone edited a .proto and forgot to regenerate).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
npx buf generate --output "$tmp"
if ! diff -r "$tmp/services/core/gen" services/core/gen; then
  echo "services/core/gen is stale: run 'npm run gen' and commit the result" >&2
  exit 1
fi
echo "generated code is up to date"
