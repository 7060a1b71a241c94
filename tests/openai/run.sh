#!/bin/sh
# Runs the official OpenAI Node client against a fresh strata-server. Installs the
# `openai` package from the npm registry on first use (into build/, not the repo).
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
build="$root/${BUILD:-build}"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "openai client test: SKIPPED (node/npm not installed)"; exit 0
fi
mkdir -p "$build/openai-test"
cp "$root/tests/openai/package.json" "$root/tests/openai/client.test.mjs" "$build/openai-test/"
if [ ! -d "$build/openai-test/node_modules/openai" ]; then
  (cd "$build/openai-test" && npm install --no-audit --no-fund --silent >/dev/null)
fi
log="$build/openai-test/server.log"
"$build/strata-server" --model "$root/models/strata-demo" --port 0 2>"$log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
port=""
for _ in $(seq 100); do
  port=$(sed -n 's/.*listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$log")
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { cat "$log"; exit 1; }
STRATA_URL="http://127.0.0.1:$port" node --test "$build/openai-test/client.test.mjs"
