#!/usr/bin/env bash
# The device check (scripts/GPU.md). Runs on the device machine from the repository root with .gpu/
# carried (bash scripts/gpu-prepare.sh fills it here): unpacks node, builds the addon with plain
# cmake against python3's torch into build-gpu/, and runs scripts/gpu-checks.cjs on cuda (on cpu
# where there is no GPU: that is how it is tried without one). Everything is logged to
# $OUT/build.log; the checks write $OUT/report.json. OUT defaults to ./gpu-out.
#   JOBS=N         build jobs (default: nproc)
#   DEVICE=...     cuda, cuda:N or cpu (default: cuda when nvidia-smi lists a GPU, else cpu)
#   CHECK_TIMEOUT  seconds for the checks (default 300)
#   RLORA_GPU_SHIM=1  skip TorchConfig.cmake and configure with a minimal stand-in (see below)
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

main() {
  local t0=$SECONDS
  local G=$ROOT/.gpu
  local JOBS=${JOBS:-$(nproc)}
  echo "== gpu-check $(date -u +%FT%TZ) on $(hostname), $(nproc) cores, $JOBS build jobs; OUT=$OUT"
  git log -1 --format='== commit %H %s' 2>/dev/null || true

  # --- node -----------------------------------------------------------------------------------
  if [[ -f $G/node.xz ]]; then
    mkdir -p /tmp/node-bin
    if [[ ! -x /tmp/node-bin/node || $G/node.xz -nt /tmp/node-bin/node ]]; then
      xz -dc "$G/node.xz" >/tmp/node-bin/node.tmp && chmod +x /tmp/node-bin/node.tmp && mv /tmp/node-bin/node.tmp /tmp/node-bin/node || return 1
    fi
    export PATH=/tmp/node-bin:$PATH
  fi
  command -v node >/dev/null || { echo "no node: run bash scripts/gpu-prepare.sh here and carry .gpu"; return 1; }
  echo "== node $(node --version) at $(command -v node)"

  # --- the machine ----------------------------------------------------------------------------
  local DEV=${DEVICE:-}
  if command -v nvidia-smi >/dev/null && nvidia-smi -L; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    DEV=${DEV:-cuda}
  else
    echo "== no nvidia-smi (or no GPU listed): the checks run with --device cpu"
    DEV=${DEV:-cpu}
  fi
  # the python whose torch CMakeLists.txt picks: python3 first on PATH, else /usr/bin/python3
  local PY=""
  for p in "$(command -v python3 || true)" /usr/bin/python3; do
    if [[ -n $p && -x $p ]] && "$p" -c 'import torch' 2>/dev/null; then PY=$p; break; fi
  done
  if [[ -z $PY ]]; then echo "== no python3 with torch: CMakeLists.txt falls back to LIBTORCH / Torch_DIR / the system libtorch"; fi
  local TORCH_VERSION="" TORCH_CUDA="None" TORCH_ABI="" TORCH_PREFIX=""
  if [[ -n $PY ]]; then
    echo "== $PY: $("$PY" --version 2>&1)"
    "$PY" -c 'import torch; print(torch.__version__, torch.version.cuda, torch._C._GLIBCXX_USE_CXX11_ABI, torch.utils.cmake_prefix_path)' || true
    read -r TORCH_VERSION TORCH_CUDA TORCH_ABI TORCH_PREFIX < <("$PY" -c 'import torch; print(torch.__version__, torch.version.cuda, int(torch._C._GLIBCXX_USE_CXX11_ABI), torch.utils.cmake_prefix_path)' 2>/dev/null)
    "$PY" -c 'import torch; print("torch sees CUDA:", torch.cuda.is_available(), torch.cuda.device_count(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' 2>&1 || true
    case $TORCH_VERSION in
      2.1[2-9]* | 2.[2-9][0-9]* | [3-9].*) echo "== WARNING: torch $TORCH_VERSION may need C++20 (torch >= 2.12 headers); CMakeLists.txt sets C++17" ;;
    esac
  fi

  # --- node_modules and N-API headers ---------------------------------------------------------
  if [[ ! -e node_modules && -d $G/node_modules ]]; then
    ln -sfn .gpu/node_modules node_modules
    echo "== node_modules -> .gpu/node_modules"
  fi
  local NAPI_INC=$G/include
  [[ -f $NAPI_INC/node_api.h ]] || NAPI_INC=/usr/include/node
  echo "== node-addon-api: $(node -p "require('node-addon-api').include")"

  # --- configure ------------------------------------------------------------------------------
  local B=$ROOT/build-gpu
  local -a CMAKE_ARGS=(-S "$ROOT" -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release "-DCMAKE_JS_INC=$NAPI_INC" -DCMAKE_CXX_FLAGS=-DBUILDING_NODE_EXTENSION)
  if [[ $TORCH_CUDA != None && -n $TORCH_CUDA ]]; then
    # TorchConfig.cmake of a CUDA torch looks for the CUDA toolkit: point it at nvcc's
    local NVCC
    NVCC=$(command -v nvcc || true)
    [[ -z $NVCC && -x /usr/local/cuda/bin/nvcc ]] && NVCC=/usr/local/cuda/bin/nvcc
    if [[ -n $NVCC ]]; then
      NVCC=$(readlink -f "$NVCC")
      local CUDA_ROOT
      CUDA_ROOT=$(dirname "$(dirname "$NVCC")")
      export CUDA_HOME=${CUDA_HOME:-$CUDA_ROOT} CUDACXX=${CUDACXX:-$NVCC} PATH=$CUDA_ROOT/bin:$PATH
      export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
      CMAKE_ARGS+=("-DCUDAToolkit_ROOT=$CUDA_ROOT" "-DCMAKE_CUDA_COMPILER=$NVCC" "-DCUDA_TOOLKIT_ROOT_DIR=$CUDA_ROOT")
      echo "== torch $TORCH_VERSION is built for CUDA $TORCH_CUDA; nvcc: $NVCC ($("$NVCC" --version | tail -1))"
    else
      echo "== torch is built for CUDA $TORCH_CUDA but no nvcc was found: TorchConfig.cmake may fail; the stand-in config follows then"
    fi
  fi
  local tc=$SECONDS
  local configured=0
  if [[ ${RLORA_GPU_SHIM:-0} != 1 ]]; then
    echo "== cmake ${CMAKE_ARGS[*]}"
    cmake "${CMAKE_ARGS[@]}" && configured=1
  fi
  if ((configured == 0)); then
    # A stand-in TorchConfig.cmake: libtorch's headers and libraries as torch.utils.cpp_extension
    # names them (what Python extensions build with), the ABI flag, and libtorch_cuda/libc10_cuda
    # linked in full so CUDA registers when the addon loads.
    echo "== configuring with a stand-in TorchConfig.cmake (TorchConfig.cmake failed or RLORA_GPU_SHIM=1)"
    write_shim "$B/torch-shim" "$PY" || return 1
    rm -rf "$B/CMakeCache.txt" "$B/CMakeFiles"
    echo "== Torch_DIR=$B/torch-shim cmake ${CMAKE_ARGS[*]}"
    Torch_DIR=$B/torch-shim LIBTORCH= cmake "${CMAKE_ARGS[@]}" || return 1
  fi
  echo "== configured in $((SECONDS - tc)) s"

  # --- build ----------------------------------------------------------------------------------
  local tb=$SECONDS
  local DIST=$G/dist
  [[ -f $DIST/index.js ]] || DIST=$ROOT/dist
  # NCCL (native/distributed/group.cpp) and the CUDA allocator's counters (native/common/
  # cuda_memory.cpp) are the code least tried against this torch: if the addon does not build or
  # load with them, build again without both and say so (their checks then fail) rather than lose
  # every check to them
  local built=1
  cmake --build "$B" -j"$JOBS" || built=0
  ((built)) && find_libraries "$B" "$PY"
  # LD_BIND_NOW: resolve every symbol at load (node loads addons lazily: a missing one would
  # only show, as a crash, at its first call)
  local loaderr=""
  if ((built)); then
    loaderr=$(LD_BIND_NOW=1 RLORA_BINARY=$B/rlora.node node -e "require('$DIST')" 2>&1) && loaderr=""
    if [[ -n $loaderr && $loaderr != *[Nn][Cc][Cc][Ll]* && $loaderr != *CUDACachingAllocator* ]]; then
      echo "== loading with every symbol bound at once failed, not on NCCL or the CUDA allocator (the checks go on):"
      echo "$loaderr" | grep -iE 'undefined|nccl|error|tried' | cut -c1-400 | head -8
      loaderr=""
    fi
  fi
  if ((built == 0)) || [[ -n $loaderr ]]; then
    [[ -n $loaderr ]] && echo "$loaderr" | grep -iE 'undefined|nccl|error|tried' | cut -c1-400 | head -8
    grep -qE 'RLORA_WITH_NCCL=1|RLORA_WITH_CUDA_MEMORY=1' "$B/build.ninja" 2>/dev/null || return 1
    echo "== BUILD OR LOAD FAILED with NCCL or the CUDA allocator's counters: configuring again with -DRLORA_NCCL=OFF -DRLORA_CUDA_MEMORY=OFF (the errors are above)"
    if ((configured == 0)); then
      Torch_DIR=$B/torch-shim LIBTORCH= cmake "${CMAKE_ARGS[@]}" -DRLORA_NCCL=OFF -DRLORA_CUDA_MEMORY=OFF || return 1
    else
      cmake "${CMAKE_ARGS[@]}" -DRLORA_NCCL=OFF -DRLORA_CUDA_MEMORY=OFF || return 1
    fi
    cmake --build "$B" -j"$JOBS" || return 1
    find_libraries "$B" "$PY"
  fi
  echo "== built $B/rlora.node in $((SECONDS - tb)) s"

  # --- the checks -----------------------------------------------------------------------------
  echo "== node scripts/gpu-checks.cjs --device $DEV --out $OUT/report.json --dist $DIST"
  local tk=$SECONDS rc=0
  RLORA_BINARY=$B/rlora.node timeout "${CHECK_TIMEOUT:-300}" node scripts/gpu-checks.cjs --device "$DEV" --out "$OUT/report.json" --dist "$DIST" || rc=$?
  ((rc == 124)) && echo "== the checks ran past ${CHECK_TIMEOUT:-300} s (the report holds the checks done so far)"
  echo "== checks: exit $rc in $((SECONDS - tk)) s; whole script $((SECONDS - t0)) s"
  return $rc
}

# find_libraries BUILD PYTHON: pip's torch finds the nvidia-* wheels' libraries through its own
# RUNPATH; where the addon's loader does not, name their folders (and torch/lib) in LD_LIBRARY_PATH
find_libraries() {
  local b=$1 py=$2
  ldd "$b/rlora.node" | grep -E 'torch|c10|cuda|nccl|not found' || true
  if ldd "$b/rlora.node" | grep -q 'not found' && [[ -n $py ]]; then
    local LIBS
    LIBS=$("$py" -c 'import glob, os, torch; site = os.path.dirname(os.path.dirname(torch.__file__)); print(":".join([os.path.join(os.path.dirname(torch.__file__), "lib")] + sorted(d for d in glob.glob(os.path.join(site, "nvidia", "**", "lib"), recursive=True) if os.path.isdir(d))))')
    export LD_LIBRARY_PATH=$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    echo "== libraries not found by the addon's RUNPATH: LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    ldd "$b/rlora.node" | grep 'not found' || true
  fi
}

# write_shim DIR PYTHON: a minimal TorchConfig.cmake for python's torch package
write_shim() {
  local dir=$1 py=$2
  [[ -n $py ]] || { echo "no python3 with torch for the stand-in config"; return 1; }
  mkdir -p "$dir"
  "$py" - "$dir/TorchConfig.cmake" <<'EOF' || return 1
import os, sys, torch
from torch.utils import cpp_extension as ce
inc = [p for p in ce.include_paths() if os.path.isdir(p)]
lib = ce.library_paths()[0]
if not inc or not os.path.isfile(os.path.join(lib, 'libtorch_cpu.so')):
    # Debian's python3-torch keeps its headers and libraries in the system folders
    inc = [p for p in ['/usr/include', '/usr/include/torch/csrc/api/include'] if os.path.isdir(p)]
    lib = '/usr/lib/x86_64-linux-gnu'
abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
libs = ['torch', os.path.join(lib, 'libtorch_cpu.so'), os.path.join(lib, 'libc10.so')]
cuda = [os.path.join(lib, n) for n in ('libtorch_cuda.so', 'libc10_cuda.so') if os.path.isfile(os.path.join(lib, n))]
if cuda:
    libs += ['-Wl,--no-as-needed'] + cuda + ['-Wl,--as-needed']
q = lambda xs: ';'.join(xs)
open(sys.argv[1], 'w').write(f'''# stand-in written by scripts/gpu-check.sh for torch {torch.__version__} (CUDA {torch.version.cuda})
set(Torch_VERSION "{torch.__version__.split('+')[0]}")
set(TORCH_INCLUDE_DIRS "{q(inc)}")
set(TORCH_CXX_FLAGS "-D_GLIBCXX_USE_CXX11_ABI={abi}")
if(NOT TARGET torch)
  add_library(torch SHARED IMPORTED)
  set_target_properties(torch PROPERTIES IMPORTED_LOCATION "{os.path.join(lib, 'libtorch.so')}"
    INTERFACE_INCLUDE_DIRECTORIES "${{TORCH_INCLUDE_DIRS}}")
endif()
set(TORCH_LIBRARIES "{q(libs)}")
set(TORCH_LIBRARY "{os.path.join(lib, 'libtorch.so')}")
set(Torch_FOUND TRUE)
''')
print('stand-in TorchConfig.cmake:', sys.argv[1], 'headers', inc, 'libraries', lib, 'cuda', cuda)
EOF
}

main 2>&1 | tee "$OUT/build.log"
exit "${PIPESTATUS[0]}"
