#!/usr/bin/env bash
# Packs the release binaries with every shared library they load, the dynamic
# loader included, into one directory, so that the benchmarks can run on
# another x86-64 Linux machine (another distribution, another glibc) without
# installing anything: run them through the packed loader,
#
#   DIR/run fleet_bench --live-only --model M.gguf
#
# nats-server (a static Go program apart from libc) is copied next to them and
# found on PATH. LD_LIBRARY_PATH is not used, so child processes keep their
# own machine's libraries.
# Usage: bench/bundle.sh [DIR]   (default build/bundle; needs scripts/build release first)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-build/bundle}"
bins=(build/release/bin/idlefleet build/release/bin/fleet_bench build/release/bin/engine_bench)
for b in "${bins[@]}"; do [ -x "$b" ] || { echo "bundle: $b is missing (run scripts/build release)" >&2; exit 1; }; done
nats="$(command -v nats-server || echo /usr/sbin/nats-server)"
[ -x "$nats" ] || { echo "bundle: nats-server is not installed" >&2; exit 1; }
rm -rf "$out"
mkdir -p "$out/lib"
cp "${bins[@]}" "$nats" "$out/"
for b in "${bins[@]}"; do
  ldd "$b" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'
done | sort -u | while read -r lib; do cp -L "$lib" "$out/lib/"; done
loader="$(ls "$out"/lib/ld-linux-x86-64.so.* | head -n 1)"
cat > "$out/run" <<'RUN'
#!/usr/bin/env bash
# Runs one of the packed programs with the packed loader and libraries.
here="$(cd "$(dirname "$0")" && pwd)"
prog="$1"; shift
PATH="$here:$PATH" exec "$here/lib/LOADER" --library-path "$here/lib" "$here/$prog" "$@"
RUN
sed -i "s|LOADER|$(basename "$loader")|" "$out/run"
chmod +x "$out/run"
echo "bundle: $(du -sh "$out" | cut -f1) in $out"
