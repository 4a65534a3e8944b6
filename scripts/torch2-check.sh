#!/usr/bin/env bash
# Builds and tests rlora against Debian 13's libtorch 2.6, in a trixie root that
# scripts/trixie-root.sh makes (about 2 minutes) or reuses. Run as root from anywhere:
#
#   bash scripts/torch2-check.sh [cpu|cuda] [COMMAND...]
#
# It copies the working tree (tracked files and untracked files git does not ignore) to
# /work/rlora inside the root and runs there, as CI does on Debian 12: `npm ci` (which builds the
# addon), then COMMAND, by default `npm test`, with python3-torch 2.6 as the tests' reference.
# The cuda root has libtorch-cuda-dev 2.6 (CUDA 12.4, NCCL): the addon builds with CUDA and NCCL
# from their real headers and runs the CPU suite on a machine without a GPU or driver.
# The root keeps npm's cache between runs. Prints the time each part took.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
FLAVOR=${1:-cpu}
case $FLAVOR in cpu | cuda) shift || true ;; *) FLAVOR=cpu ;; esac
if [[ $# -eq 0 ]]; then set -- npm test; fi

t0=$SECONDS
ROOT=$(bash "$HERE/scripts/trixie-root.sh" "$FLAVOR" | tail -1)
t_root=$((SECONDS - t0))

# RLORA_T2_QUICK=1 (for development): keep the root's node_modules/ from the last run and run
# `npm run build` instead of `npm ci` (build/ is kept too, but every source is newer than it).
DEST=$ROOT/work/rlora
KEEP=$ROOT/work/.keep
rm -rf "$KEEP"
if [[ ${RLORA_T2_QUICK:-0} == 1 && -d $DEST/node_modules ]]; then
  mkdir -p "$KEEP"
  mv "$DEST/node_modules" "$KEEP/"
  if [[ -d $DEST/build ]]; then mv "$DEST/build" "$KEEP/"; fi
fi
rm -rf "$DEST"
mkdir -p "$DEST"
# -m: the files get the time of the copy, so a kept build/ (RLORA_T2_QUICK) never takes an object
# compiled from another tree's older copy of a file for up to date
(cd "$HERE" && git ls-files -co --exclude-standard -z | tar --null -cf - -T -) | tar -xmf - -C "$DEST"
if [[ -d $KEEP ]]; then mv "$KEEP"/* "$DEST/" && rm -rf "$KEEP"; fi

up() {
  mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
  mountpoint -q "$ROOT/dev" || mount --rbind /dev "$ROOT/dev"
  mkdir -p "$ROOT/tmp" && chmod 1777 "$ROOT/tmp"
  cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
}
down() {
  umount -R -l "$ROOT/dev" 2>/dev/null || true
  umount -l "$ROOT/proc" 2>/dev/null || true
}
trap down EXIT
up

# A clean environment, plus what decides numbers and kernels on this machine
ENVS=(HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
  NODE_EXTRA_CA_CERTS=/etc/rlora/host-ca.crt)
# CI only when set: node-llama-cpp refuses an empty CI ("should be either true, false, 1 or 0")
for v in CI OPENBLAS_CORETYPE OPENBLAS_L2_SIZE ONEDNN_MAX_CPU_ISA; do
  if [[ -n ${!v:-} ]]; then ENVS+=("$v=${!v}"); fi
done
inroot() { chroot "$ROOT" env -i "${ENVS[@]}" bash -c "cd /work/rlora && $1"; }

# a git checkout, as CI's clean clone is (packaging and the GPU check list files with git)
inroot "git init -q && git add -A && git -c user.name=rlora -c user.email=rlora@localhost commit -qm 'working tree copied by torch2-check.sh'"
echo "== torch2-check ($FLAVOR): $(chroot "$ROOT" /usr/bin/python3 -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)'), node $(chroot "$ROOT" node --version), root $ROOT"
t1=$SECONDS
if [[ -d $DEST/node_modules ]]; then inroot "npm run build"; else inroot "npm ci --no-audit --no-fund"; fi
# node-llama-cpp for the GGUF tests, in a folder of its own (test/gguf-runtime/; they skip without it)
inroot "npm run test:gguf-setup -- --no-audit --no-fund"
t_ci=$((SECONDS - t1))
inroot "npx tsx -e \"const n = require('./lib/native').native; console.log('== addon built against', JSON.stringify(n.buildInfo), 'gloo', n.hasGloo, 'nccl', n.hasNccl)\""
t2=$SECONDS
status=0
inroot "$(printf '%q ' "$@")" || status=$?
t_cmd=$((SECONDS - t2))
echo "== torch2-check ($FLAVOR) times: root ${t_root} s, npm ci/build ${t_ci} s, '$*' ${t_cmd} s; exit $status"
exit $status
