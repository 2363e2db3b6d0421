#!/usr/bin/env bash
# The journal's encoder in instructions a line (callgrind): the shipped one
# (serde_json + base64) against the hand-written one it replaced
# (benches/journal_encode.rs),
# one line kind at a time: a count that the machine's load does not move.
#
#   benches/journal_encode.sh
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
# Symbols kept (the release profile strips them), for --toggle-collect.
bin=$(CARGO_PROFILE_BENCH_STRIP=false cargo bench --bench journal_encode --no-run \
    --message-format=json 2>/dev/null | grep -o '"executable":"[^"]*journal_encode[^"]*"' |
    cut -d'"' -f4 | tail -1)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# Instructions in FUNCTION's calls, over `--once`'s 2,000 lines (and the
# one line each encoder makes for the check), a line.
per_line() { # FUNCTION CASE ONLY
    valgrind --tool=callgrind --callgrind-out-file="$out/cg" --toggle-collect="$1" \
        "$bin" --once --case="$2" --only="$3" >/dev/null 2>&1
    callgrind_annotate "$out/cg" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print int($1 / 2001) }'
}
echo "| line | hand-written instructions | serde_json + base64 instructions | ratio |"
echo "|---|---:|---:|---:|"
for case in "14 B text" "14 B text, peer" "4 KiB text" "4 KiB binary" "232 B escapes"; do
    hand=$(per_line '*hand_line*' "$case" hand)
    serde=$(per_line '*serde_line*' "$case" serde)
    echo "| $case | $hand | $serde | $(awk "BEGIN { printf \"%.2f\", $serde / $hand }") |"
done
