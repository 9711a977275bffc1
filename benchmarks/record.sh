# shellcheck shell=bash
# record.sh — how benchmark scripts keep what they measured. Source it:
#
#   source "$(dirname "$0")/record.sh"
#   record_init
#   record engine-decode go test -run '^$' -bench Decode ./engine/
#   interleave 3 llmux 'bin/llmux bench ... --output $RECORD_DIR/llmux-$PAIR.json' \
#                peer  'bin/llmux bench ... --output $RECORD_DIR/peer-$PAIR.json'
#
# Everything lands in one directory, RECORD_DIR, by default
# benchmarks/results/<UTC date>-<short commit>[-dirty]/:
#
#   machine.txt   the machine, the commit and the time, written once
#   commands.tsv  one line per recorded run: name, start, end, exit status
#                 and the exact command line (tab-separated, UTC ISO-8601)
#   NAME.txt      the run's stdout and stderr, verbatim, in the order written
#
# Nothing in these files is edited by hand, and no record is overwritten.
#
# The functions return a status instead of exiting, and work under
# `set -euo pipefail`: `record` returns the command's exit status, so a
# plain `record name cmd` in a `set -e` script stops the script when the
# command fails, while `record name cmd || true` carries on. Misuse (no
# record_init, a bad or already recorded name, too few pairs) returns 2
# after a message on stderr.

_record_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

_record_now() { date -u +%Y-%m-%dT%H:%M:%SZ; }

# record_init sets and exports RECORD_DIR (unless the caller set it),
# creates it, and writes machine.txt and the header of commands.tsv there
# unless they already exist.
record_init() {
  local commit=unknown short=unknown dirty=no
  if git -C "$_record_root" rev-parse --verify -q HEAD >/dev/null 2>&1; then
    commit="$(git -C "$_record_root" rev-parse HEAD)"
    short="$(git -C "$_record_root" rev-parse --short HEAD)"
    if ! git -C "$_record_root" diff --quiet HEAD -- 2>/dev/null; then
      dirty=yes
    fi
  fi
  if [ -z "${RECORD_DIR:-}" ]; then
    RECORD_DIR="$_record_root/benchmarks/results/$(date -u +%Y-%m-%d)-$short"
    if [ "$dirty" = yes ]; then
      RECORD_DIR="$RECORD_DIR-dirty"
    fi
  fi
  mkdir -p "$RECORD_DIR" || return 2
  RECORD_DIR="$(cd "$RECORD_DIR" && pwd)" || return 2
  export RECORD_DIR
  if [ ! -e "$RECORD_DIR/commands.tsv" ]; then
    printf 'name\tstart\tend\tstatus\tcommand\n' >"$RECORD_DIR/commands.tsv" || return 2
  fi
  if [ -e "$RECORD_DIR/machine.txt" ]; then
    return 0
  fi
  {
    echo "time: $(_record_now)"
    echo "commit: $commit"
    echo "dirty: $dirty"
    echo "cpu: $(grep -m1 '^model name' /proc/cpuinfo 2>/dev/null | sed 's/^[^:]*: *//' || echo unknown)"
    echo "cpu flags: $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | sed 's/^[^:]*: *//' || echo unknown)"
    echo "cores: $(nproc 2>/dev/null || echo unknown)"
    echo "memory: $(grep -m1 '^MemTotal' /proc/meminfo 2>/dev/null | sed 's/^[^:]*: *//' || echo unknown)"
    echo "kernel: $(uname -a)"
    echo "go: $(go version 2>/dev/null || echo none)"
    if [ -x "$_record_root/bin/llmux" ]; then
      echo "llmux: bin/llmux version"
      "$_record_root/bin/llmux" version 2>&1 | sed 's/^/  /' || true
    else
      echo "llmux: no bin/llmux"
    fi
  } >"$RECORD_DIR/machine.txt" || return 2
  echo "record: results in $RECORD_DIR" >&2
}

# _record_check NAME: NAME is usable and not yet recorded.
_record_check() {
  if [ -z "${RECORD_DIR:-}" ] || [ ! -e "$RECORD_DIR/machine.txt" ]; then
    echo "record: call record_init first" >&2
    return 2
  fi
  if [[ ! "$1" =~ ^[A-Za-z0-9][A-Za-z0-9._+-]*$ ]]; then
    echo "record: name '$1': use letters, digits and . _ + - only" >&2
    return 2
  fi
  if [ -e "$RECORD_DIR/$1.txt" ]; then
    echo "record: $RECORD_DIR/$1.txt already exists; records are never overwritten" >&2
    return 2
  fi
}

# record NAME CMD [ARGS...] runs CMD with stdout and stderr both captured
# into $RECORD_DIR/NAME.txt (and copied to stderr), appends its line to
# commands.tsv, and returns its exit status.
record() {
  if [ $# -lt 2 ]; then
    echo "record: usage: record NAME CMD [ARGS...]" >&2
    return 2
  fi
  local name=$1
  shift
  _record_check "$name" || return 2
  local out="$RECORD_DIR/$name.txt"
  # Create the file only if it is absent, so that two runs racing for a
  # name cannot both write it.
  if ! (set -C && : >"$out") 2>/dev/null; then
    echo "record: $out already exists; records are never overwritten" >&2
    return 2
  fi
  local start end cmdline
  local -a st=(0 0)
  cmdline="$(printf '%q ' "$@")"
  start="$(_record_now)"
  "$@" 2>&1 | tee "$out" >&2 || st=("${PIPESTATUS[@]}")
  end="$(_record_now)"
  if [ "${st[1]}" -ne 0 ]; then
    echo "record: writing $out failed" >&2
  fi
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$start" "$end" "${st[0]}" "${cmdline% }" >>"$RECORD_DIR/commands.tsv"
  return "${st[0]}"
}

# interleave PAIRS NAME_A CMD_A NAME_B CMD_B compares two configurations
# by running them alternately, A B A B ..., PAIRS times, each through
# `record` as NAME_A-1, NAME_B-1, NAME_A-2, ... CMD_A and CMD_B are strings
# run with `bash -c`: write them in single quotes, and they can use the
# exported RECORD_DIR and PAIR (the pair's number, from 1), e.g.
# '--output $RECORD_DIR/a-$PAIR.json'. Shell functions of the calling
# script are visible to them only if exported (`export -f`). PAIRS must be
# at least 3 unless ALLOW_FEWER_PAIRS=1. The first failing run stops the
# comparison, and its status is returned. INTERLEAVE_ORDER=alternate runs
# even pairs B first (A B B A A B ...), so that whatever favours the
# first (or second) run of a pair falls on both sides equally.
interleave() {
  if [ $# -ne 5 ]; then
    echo "interleave: usage: interleave PAIRS NAME_A CMD_A NAME_B CMD_B" >&2
    return 2
  fi
  local pairs=$1 na=$2 ca=$3 nb=$4 cb=$5 i n status
  if [[ ! "$pairs" =~ ^[0-9]+$ ]] || [ "$pairs" -lt 1 ]; then
    echo "interleave: PAIRS '$pairs': want a positive number" >&2
    return 2
  fi
  if [ "$pairs" -lt 3 ] && [ "${ALLOW_FEWER_PAIRS:-}" != 1 ]; then
    echo "interleave: $pairs pairs: a comparison needs at least 3 (A B A B A B); set ALLOW_FEWER_PAIRS=1 for a trial" >&2
    return 2
  fi
  if [ "$na" = "$nb" ]; then
    echo "interleave: A and B are both named '$na'" >&2
    return 2
  fi
  # Check every name before the first run, not halfway through.
  for ((i = 1; i <= pairs; i++)); do
    for n in "$na-$i" "$nb-$i"; do
      _record_check "$n" || return 2
    done
  done
  case "${INTERLEAVE_ORDER:-ab}" in
  ab | alternate) ;;
  *)
    echo "interleave: INTERLEAVE_ORDER '${INTERLEAVE_ORDER}': want ab or alternate" >&2
    return 2
    ;;
  esac
  local n1 c1 n2 c2
  for ((i = 1; i <= pairs; i++)); do
    export PAIR=$i
    status=0
    n1=$na c1=$ca n2=$nb c2=$cb
    if [ "${INTERLEAVE_ORDER:-ab}" = alternate ] && ((i % 2 == 0)); then
      n1=$nb c1=$cb n2=$na c2=$ca
    fi
    record "$n1-$i" bash -c "$c1" || status=$?
    if [ "$status" -eq 0 ]; then
      record "$n2-$i" bash -c "$c2" || status=$?
    fi
    if [ "$status" -ne 0 ]; then
      echo "interleave: pair $i failed with status $status; stopping" >&2
      unset PAIR
      return "$status"
    fi
  done
  unset PAIR
}

# summarize_batches NAME_A NAME_B: for each batch size, each pair's A/B
# tokens/s ratio, their median and range, from the record files NAME_A-N.txt
# and NAME_B-N.txt of an interleave. It reads the native harness's lines
# (`batch=4 tok/s=272.6`) and the engine's Go benchmark lines
# (`BenchmarkDecode/.../batch=4-2  1  ... 272.6 tok/s`).
summarize_batches() {
  local a=$1 b=$2 f
  for f in "$RECORD_DIR/$a"-[0-9]*.txt; do
    paste <(_batch_rates "$f") <(_batch_rates "$RECORD_DIR/$b-${f##*-}")
  done | awk -v a="$a" -v b="$b" '
    $1 != $3 { print "summarize_batches: batch " $1 " of " a " paired with batch " $3 " of " b > "/dev/stderr"; exit 1 }
    { r[$1] = r[$1] " " $2 / $4 }
    END {
      for (batch in r) {
        n = split(substr(r[batch], 2), v, " ");
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
        med = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2;
        printf "batch=%s %s/%s pairs=%s median=%.3f range=%.3f-%.3f\n", batch, a, b, substr(r[batch], 2), med, v[1], v[n]
      }
    }' | sort -t= -k2 -n
}

# _batch_rates FILE: "BATCH TOK/S" for each batch line of FILE, in order.
_batch_rates() {
  awk '
    /^batch=[0-9]+ tok\/s=/ { split($1, x, "="); split($2, y, "="); print x[2], y[2]; next }
    /^BenchmarkDecode\/.*batch=[0-9]+/ && / tok\/s/ {
      match($1, /batch=[0-9]+/); batch = substr($1, RSTART + 6, RLENGTH - 6)
      for (i = 2; i <= NF; i++) if ($i == "tok/s") print batch, $(i - 1)
    }' "$1"
}
