#!/usr/bin/env bash
# serve-llmux.sh BIN [SERVE-ARGS...] — a fresh llmux server for the next
# benchmark run: stops the one this script started last (its pid is kept
# in $work/pid), starts `BIN serve --port $PORT --log-level warn
# SERVE-ARGS...` in its own session, appends the command line and its
# output to $RECORD_DIR/serve.log, and returns once /v1/models lists a
# loaded model. Environment: work, PORT, RECORD_DIR (the scripts that call
# it export them).
set -euo pipefail
: "${work:?}" "${PORT:?}" "${RECORD_DIR:?}"
[ -f "$work/pid" ] && { kill "$(cat "$work/pid")" 2>/dev/null || true; sleep 1; }
cmd=("$1" serve --port "$PORT" --log-level warn "${@:2}")
printf '== %s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(printf '%q ' "${cmd[@]}")" >>"$RECORD_DIR/serve.log"
setsid "${cmd[@]}" >>"$RECORD_DIR/serve.log" 2>&1 &
echo $! >"$work/pid"
for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$PORT/v1/models" | grep -q '"loaded"' && exit 0; sleep 0.2; done
echo "serve-llmux: $1 did not come up on port $PORT (see $RECORD_DIR/serve.log)" >&2
exit 1
