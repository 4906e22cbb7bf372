#!/usr/bin/env bash
# Fails when proto/ breaks the released v1 API: `buf breaking` (FILE rules, buf.yaml) against the
# commit that froze v1. Field numbers, names, types and RPCs of v1 stay as they are; add new
# fields and RPCs instead. A break that is truly wanted belongs in a v2 package.
set -euo pipefail
cd "$(dirname "$0")/.."
# The commit "Proto v1: ..." that froze the API (its proto/ is the baseline).
V1_BASELINE=9f2eec6e77149994d61b162cbe46987b290b94b6
if ! git cat-file -e "$V1_BASELINE^{commit}" 2>/dev/null; then
  echo "check-breaking: the v1 baseline commit $V1_BASELINE is not in this clone (a shallow clone?): fetch the full history" >&2
  exit 1
fi
npx buf breaking --against ".git#ref=$V1_BASELINE"
echo "proto/ keeps the v1 API (buf breaking against $V1_BASELINE)"
