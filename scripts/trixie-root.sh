#!/usr/bin/env bash
# Makes (or reuses) a Debian 13 (trixie) root in which the addon is built and tested against
# Debian's libtorch 2.6. Run as root on a Debian machine that reaches Debian's package servers.
#
#   bash scripts/trixie-root.sh cpu    # libtorch-dev 2.6 (CPU) + python3-torch 2.6
#   bash scripts/trixie-root.sh cuda   # libtorch-cuda-dev 2.6 (CUDA 12, NCCL) + python3-torch-cuda
#
# Prints the root's path on its last line. The root lives in $RLORA_TRIXIE_DIR (default
# /var/cache/rlora), as trixie-cpu/ or trixie-cuda/; a finished root carries the marker file
# .rlora-root-ready and is reused as it is (delete the folder to make it again). Making one
# takes about 40 minutes on 2 cores (most of it unpacking); the cuda root starts as a copy of
# the cpu root when that exists. A half-made root is made in a .partial sibling and only
# renamed into place once complete, so an interrupted run never leaves a root that looks ready.
set -euo pipefail
FLAVOR=${1:-cpu}
case $FLAVOR in cpu | cuda) ;; *) echo "usage: $0 cpu|cuda" >&2; exit 2 ;; esac
DIR=${RLORA_TRIXIE_DIR:-/var/cache/rlora}
ROOT=$DIR/trixie-$FLAVOR
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
MARK=.rlora-root-ready

# Packages inside the root. The CUDA build of libtorch replaces libtorch-dev; its CMake config
# needs the CUDA toolkit (nvcc, headers) and NCCL's header, all in contrib/non-free.
# (libgloo-cuda-dev conflicts with libgloo-dev; apt removes the cpu root's copy of the latter.)
# (qemu-user, util-linux and bsdutils: tests that run on an emulated CPU, under taskset, in a terminal;
# python3-pil and fonts-dejavu-core: the chart test measures labels in the PNG's font;
# python3-setuptools: torch.compile's C++ builds, for the training benchmark's compiled baseline)
COMMON=(cmake g++ make ninja-build git ca-certificates libopenblas0-pthread nodejs npm procps xz-utils qemu-user util-linux bsdutils mount bsdextrautils python3-pil fonts-dejavu-core)
if [[ $FLAVOR == cpu ]]; then
  PKGS=("${COMMON[@]}" libgloo-dev libtorch-dev python3-torch python3-setuptools)
else
  PKGS=("${COMMON[@]}" libgloo-cuda-dev libtorch-cuda-dev python3-torch-cuda nvidia-cuda-toolkit libnccl-dev)
fi

if [[ -f $ROOT/$MARK ]]; then
  echo "== reusing $ROOT (made $(cat "$ROOT/$MARK"))" >&2
  # a root made before a package joined the list gets it now
  missing=()
  for p in "${PKGS[@]}"; do
    chroot "$ROOT" dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    echo "== installing into it: ${missing[*]}" >&2
    cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
    mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
    chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get update >&2
    chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
    chroot "$ROOT" apt-get clean >&2
    umount -l "$ROOT/proc" 2>/dev/null || true
  fi
  echo "$ROOT"
  exit 0
fi
[[ $(id -u) == 0 ]] || { echo "making a trixie root needs root (debootstrap, chroot, mount)" >&2; exit 1; }

PART=$ROOT.partial
mkdir -p "$DIR"
t0=$SECONDS

mounts() { # $1 = up|down
  if [[ $1 == up ]]; then
    mountpoint -q "$PART/proc" || mount -t proc proc "$PART/proc"
    mountpoint -q "$PART/dev" || mount --bind /dev "$PART/dev"
  else
    umount -l "$PART/dev" 2>/dev/null || true
    umount -l "$PART/proc" 2>/dev/null || true
  fi
}
trap 'mounts down' EXIT

# A stand-in for cuDNN 9 (which Debian does not ship: nvidia-cudnn downloads it), ONLY for building
# and running the CPU tests against the CUDA libtorch on a machine without a GPU: every function
# the torch libraries import from libcudnn.so.9 exists (so the dynamic loader is satisfied) and
# aborts with a message if it is ever called, which only CUDA convolution/RNN kernels would do.
# Its folder is named for what it is; on a machine with a GPU, install the real cuDNN instead.
cudnn_standin() {
  local dir=/usr/local/lib/rlora-cudnn-standin
  mkdir -p "$PART$dir"
  local syms
  syms=$(find "$PART/usr/lib/x86_64-linux-gnu" "$PART/usr/lib/python3/dist-packages/torch" -name '*.so*' -type f 2>/dev/null |
    { xargs -r readelf --dyn-syms -W 2>/dev/null || true; } | awk '$7 == "UND" && $8 ~ /@libcudnn\.so\.9/ { sub(/@.*/, "", $8); print $8 }' | sort -u)
  [[ -n $syms ]] || { echo "no library imports libcudnn.so.9: no stand-in needed" >&2; return 0; }
  {
    echo '#include <stdio.h>'
    echo '#include <stdlib.h>'
    echo 'static void standin(const char* f) { fprintf(stderr, "rlora check root: %s called on the stand-in libcudnn.so.9 (no real cuDNN here)\n", f); abort(); }'
    for f in $syms; do echo "void $f(void) { standin(\"$f\"); }"; done
  } >"$PART$dir/standin.c"
  echo 'libcudnn.so.9 { global: *; };' >"$PART$dir/standin.map"
  chroot "$PART" gcc -shared -fPIC -O1 -o "$dir/libcudnn.so.9" -Wl,-soname,libcudnn.so.9 -Wl,--version-script="$dir/standin.map" "$dir/standin.c"
  echo "$dir" >"$PART/etc/ld.so.conf.d/rlora-cudnn-standin.conf"
  chroot "$PART" ldconfig
  echo "== stand-in libcudnn.so.9 with $(wc -w <<<"$syms") functions in $dir" >&2
}

if [[ ! -f $PART/.debootstrap-done ]]; then
  if [[ $FLAVOR == cuda && -f $DIR/trixie-cpu/$MARK ]]; then
    echo "== copying $DIR/trixie-cpu to start the cuda root" >&2
    rm -rf "$PART"
    cp -a "$DIR/trixie-cpu" "$PART"
    rm -f "$PART/$MARK"
  else
    command -v debootstrap >/dev/null || apt-get install -y debootstrap >&2
    rm -rf "$PART"
    echo "== debootstrap trixie into $PART" >&2
    debootstrap --variant=minbase --components=main,contrib,non-free trixie "$PART" "$MIRROR" >&2
  fi
  touch "$PART/.debootstrap-done"
  echo "== base root in $((SECONDS - t0)) s" >&2
fi

cp /etc/resolv.conf "$PART/etc/resolv.conf"
# npm inside the root trusts what the host trusts (a proxying CA, where there is one)
CA=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
if [[ -f $CA ]]; then mkdir -p "$PART/etc/rlora" && cp "$CA" "$PART/etc/rlora/host-ca.crt"; fi
mounts up
# nvidia-cudnn (a dependency of libtorch-cuda-2.6) is a downloader: its post-install script fetches
# cuDNN from NVIDIA, which these machines cannot reach. Decline it, and give the root a stand-in
# libcudnn.so.9 below so that the CUDA libraries load on a machine without a GPU.
if [[ $FLAVOR == cuda ]]; then
  echo "nvidia-cudnn nvidia-cudnn/question select I Decline" | chroot "$PART" debconf-set-selections
  chroot "$PART" env DEBIAN_FRONTEND=noninteractive dpkg --configure -a >&2 || true
fi
chroot "$PART" env DEBIAN_FRONTEND=noninteractive apt-get update >&2
chroot "$PART" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${PKGS[@]}" >&2
chroot "$PART" apt-get clean >&2
if [[ $FLAVOR == cuda ]]; then cudnn_standin; fi
mounts down
trap - EXIT
date -u +%FT%TZ >"$PART/$MARK"
rm -rf "$ROOT"
mv "$PART" "$ROOT"
echo "== made $ROOT in $((SECONDS - t0)) s" >&2
echo "$ROOT"
