#!/usr/bin/env bash
# Installs, builds and runs Gantry on this machine (`gantry up`: the server with SQLite and an
# in-process agent), deploys the examples, and shows how to call them. Ctrl-C stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh --target gantry  # the product only: the test command builds the tests
LISTEN="${GANTRY_LISTEN:-127.0.0.1:8000}"
export GANTRY_DATA_DIR="${GANTRY_DATA_DIR:-gantry-data}"
export GANTRY_URL="http://$LISTEN"
build/gantry up --listen "$LISTEN" --data-dir "$GANTRY_DATA_DIR" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid' INT TERM
for _ in $(seq 100); do
  curl -sf "$GANTRY_URL/healthz" >/dev/null && break
  sleep 0.1
done
build/gantry deploy examples/echo
build/gantry deploy examples/stream
if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
  build/gantry deploy examples/torch-model
else
  echo "(examples/torch-model skipped: Debian's python3-torch is not installed)"
fi
KEY=$(cat "$GANTRY_DATA_DIR/admin.key")
cat <<MSG

Gantry is up at $GANTRY_URL (data in $GANTRY_DATA_DIR, admin key in $GANTRY_DATA_DIR/admin.key).
Try, in another shell (from $(pwd)):
  export GANTRY_URL=$GANTRY_URL GANTRY_DATA_DIR=$GANTRY_DATA_DIR
  build/gantry run echo --input '{"hello": "world"}'
  build/gantry run torch-model --input '{"seed": 7}'
  build/gantry ps ; build/gantry logs echo ; build/gantry usage
  curl -s -X POST $GANTRY_URL/v2/echo/runsync -H "Authorization: Bearer $KEY" -d '{"input": {"x": 1}}'
Ctrl-C stops Gantry and its workers.
MSG
wait $pid
