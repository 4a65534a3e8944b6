#!/usr/bin/env bash
# Fills .gpu/ (git-ignored) with what scripts/gpu-check.sh needs on the device machine, which has
# PyTorch, CMake and ninja but no Node and no internet (scripts/GPU.md):
#   .gpu/node.xz        /usr/bin/node, xz-compressed (~24 MB; recompressed only when node is newer)
#   .gpu/include/       the four N-API headers the addon compiles against
#   .gpu/node_modules/  node-addon-api (build), node-gyp-build, @huggingface/jinja, @huggingface/tokenizers
#   .gpu/helpers/       test/helpers/math.ts and ports.ts compiled (the checks' arithmetic, free ports)
#   .gpu/dist/          a fresh `npm run build:ts`, with .gpu/package.json beside it (dist/adapter.js reads ../package.json)
# Then prints the sizes and fails when .gpu/ plus what travels anyway would pass ~60 MiB (the limit is 64 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
G=.gpu
LIMIT_MIB=${GPU_LIMIT_MIB:-60}

NODE_BIN=${NODE_BIN:-/usr/bin/node}
HEADERS_DIR=${NODE_HEADERS_DIR:-/usr/include/node}
# runtime packages of the checks, and node-addon-api for the build
PACKAGES=(node-addon-api node-gyp-build @huggingface/jinja @huggingface/tokenizers)

mkdir -p "$G/include" "$G/node_modules"

# 1. node, compressed (xz -6 on 2 threads: about 50 s for 99 MB)
if [[ -f $G/node.xz && $G/node.xz -nt $NODE_BIN ]]; then
  echo "gpu-prepare: $G/node.xz is newer than $NODE_BIN: kept"
else
  echo "gpu-prepare: compressing $NODE_BIN ($("$NODE_BIN" --version)) into $G/node.xz ..."
  xz -6 -T2 -c "$NODE_BIN" >"$G/node.xz.tmp"
  mv "$G/node.xz.tmp" "$G/node.xz"
fi
"$NODE_BIN" --version >"$G/node.version"

# 2. the N-API headers
for h in node_api.h node_api_types.h js_native_api.h js_native_api_types.h; do
  cp "$HEADERS_DIR/$h" "$G/include/$h"
done

# 3. node_modules: each package and the dependencies it declares (recursively), from this checkout
rm -rf "$G/node_modules"
mkdir -p "$G/node_modules"
declare -A copied=()
copy_package() {
  local name=$1
  [[ -n ${copied[$name]:-} ]] && return 0
  local src=node_modules/$name
  if [[ ! -f $src/package.json ]]; then
    echo "gpu-prepare: $src is missing: run npm install first" >&2
    exit 1
  fi
  copied[$name]=1
  mkdir -p "$(dirname "$G/node_modules/$name")"
  cp -a "$src" "$G/node_modules/$name"
  local deps
  deps=$(node -e 'const p = require(process.argv[1]); console.log(Object.keys(p.dependencies || {}).join("\n"))' "$ROOT/$src/package.json")
  local d
  for d in $deps; do copy_package "$d"; done
}
for p in "${PACKAGES[@]}"; do copy_package "$p"; done
echo "gpu-prepare: node_modules: ${!copied[*]}"

# 4. dist/, freshly compiled
npm run --silent build:ts
rm -rf "$G/dist"
cp -a dist "$G/dist"
find "$G/dist" -name '*.map' -delete
# the checks' arithmetic and free ports: the tests' own helpers (test/helpers/math.ts, ports.ts),
# compiled to CommonJS
rm -rf "$G/helpers"
npx --no-install tsc test/helpers/math.ts test/helpers/ports.ts --outDir "$G/helpers" --module commonjs --target es2020 --skipLibCheck
cp package.json "$G/package.json"

# 5. sizes: .gpu/ travels as a carried path; tracked and untracked-not-ignored files travel anyway
gpu_bytes=$(du -sb "$G" | cut -f1)
tree_bytes=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } | xargs -0 -r du -cb 2>/dev/null | awk '$2 == "total" { s += $1 } END { print s + 0 }')
shared_bytes=0
[[ -d shared ]] && shared_bytes=$(du -sb shared | cut -f1)
total=$((gpu_bytes + tree_bytes + shared_bytes))
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo "gpu-prepare: .gpu/ $(mib "$gpu_bytes") (node.xz $(mib "$(stat -c %s "$G/node.xz")")), working tree $(mib "$tree_bytes"), shared/ $(mib "$shared_bytes"): $(mib "$total") would travel"
if ((total > LIMIT_MIB * 1048576)); then
  echo "gpu-prepare: that is over ${LIMIT_MIB} MiB (the device machine takes at most 64 MiB): leave something out" >&2
  exit 1
fi
echo "gpu-prepare: ready. On the device machine: bash scripts/gpu-check.sh, carrying [\".gpu\"] (scripts/GPU.md)"
