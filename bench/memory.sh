#!/usr/bin/env bash
# Peak resident memory of `idlefleet run` against what it must hold: the
# weights plus the KV cache (target: at most 10% more).
# Usage: bench/memory.sh [MODEL.gguf]   (default: synthetic tinyllama1b q4_0)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/release/bin/idlefleet
model="${1:-build/bench-models/tinyllama1b-q4_0.gguf}"
if [ ! -f "$model" ]; then
  mkdir -p "$(dirname "$model")"
  "$bin" model synth --shape tinyllama1b --type q4_0 -o "$model"
fi
log="$(mktemp)"
/usr/bin/time -v "$bin" run -m "$model" -p "Once upon a time" -n 64 -t 2 >/dev/null 2>"$log"
line="$(grep '^model: ' "$log")"
weights_mb="$(sed -E 's/.*weights ([0-9.]+) MB.*/\1/' <<<"$line")"
kv_mb="$(sed -E 's/.*KV cache ([0-9.]+) MB.*/\1/' <<<"$line")"
rss_kb="$(awk '/Maximum resident set size/ {print $NF}' "$log")"
awk -v w="$weights_mb" -v k="$kv_mb" -v r="$rss_kb" -v m="$model" 'BEGIN {
  rss = r * 1024 / 1e6; need = w + k;
  printf "model %s\nweights %.1f MB + KV cache %.1f MB = %.1f MB\npeak RSS %.1f MB = %.3f x (weights + KV); target <= 1.10\n",
         m, w, k, need, rss, rss / need }'
grep -E '^prefill' "$log" || true
rm -f "$log"
