#!/usr/bin/env bash
# The HTTP API against its own OpenAPI document: a single trusted node on loopback (its own data
# directory, rate limits raised so that the fuzzer is not throttled), then `schemathesis run
# --checks all` with a bounded number of examples per operation. Fails on any failure class.
# Usage: scripts/api_conformance.sh PATH/TO/doin [PORT]
set -euo pipefail
doin="$1"
port="${2:-18470}"
here="$(cd "$(dirname "$0")" && pwd)"
dir="$(mktemp -d)"
trap 'kill "$node" 2>/dev/null || true; wait "$node" 2>/dev/null || true; rm -rf "$dir"' EXIT
cat > "$dir/node.json" <<JSON
{ "host": "127.0.0.1", "port": $port, "data_dir": "$dir/data", "api_key": "conformance",
  "http_rate_limit": 100000, "http_burst": 100000, "max_block_interval": 1.0, "seal_slot": 0.2,
  "olap_db_path": "$dir/olap.db",
  "domains": [{ "domain_id": "quadratic", "optimize": true, "evaluate": false,
                "synthetic_data_validation": false, "target_performance": -100.0 }] }
JSON
"$doin" node --config "$dir/node.json" --duration 900 --log-level warn > "$dir/node.out" 2>&1 &
node=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/chain/status" > /dev/null && break
  sleep 0.2
done
cd "$here"
schemathesis run "http://127.0.0.1:$port/openapi.json" --checks all --no-color \
  --request-timeout 15 --seed 1
