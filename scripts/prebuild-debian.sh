#!/usr/bin/env bash
# npm run prebuild-debian: the prebuilt binaries rlora ships, one per Debian libtorch, filed in
# prebuilds/linux-x64/ for `npm run package` to pack together:
#   rlora.glibc.torch1_13-cpu-deb.node    Debian 12's libtorch 1.13 (built here)
#   rlora.glibc.torch2_6-cpu-deb.node     Debian 13's libtorch 2.6 (built in the trixie cpu root)
#   rlora.glibc.torch2_6-cuda-deb.node    Debian 13's CUDA build (built in the trixie cuda root; "cuda":
#                                          the loader finds no CUDA version beside Debian's libraries)
# Each is made by `npm run prebuild-torch` on its own libtorch. The roots come from
# scripts/trixie-root.sh (made in a few minutes, or reused); this needs root. Pass "cpu" or "cuda"
# to make only that root's binary (the 1.13 one is always made, when this machine has 1.13).
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
cd "$HERE"
FLAVORS=("$@")
if [[ ${#FLAVORS[@]} -eq 0 ]]; then FLAVORS=(cpu cuda); fi
OUT=prebuilds/linux-x64
mkdir -p "$OUT"
npm run prebuild-torch
for flavor in "${FLAVORS[@]}"; do
  root=$(bash scripts/trixie-root.sh "$flavor" | tail -1)
  RLORA_T2_QUICK=1 bash scripts/torch2-check.sh "$flavor" npm run prebuild-torch
  cp -v "$root"/work/rlora/prebuilds/linux-x64/*.node "$OUT/"
done
ls -l "$OUT"
