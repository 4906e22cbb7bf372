#!/usr/bin/env bash
# Fails when the committed generated code under services/core/gen differs from what
# `buf generate` produces from proto/ now (someone edited a .proto and forgot to regenerate), or
# the README's settings table differs from the settings schema (`npm run gen` rewrites both).
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
# The README's settings table is generated from the settings schema, too.
npx tsx scripts/settings-table.ts --check
