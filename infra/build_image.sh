#!/usr/bin/env bash
# Build the step images without a container registry (STACK.md recipe):
#   debootstrap --variant=minbase -> podman import (rootfs) -> buildah bud base -> buildah bud <kind> -> oci-archive
# Usage: infra/build_image.sh KIND...   KIND in base|pipelines|annotate|train|serve (base is built on demand).
# Settings (environment; nothing host-specific is hard-coded here):
#   DEBIAN_MIRROR   Debian mirror for debootstrap and the images' apt (required; `make images` passes one)
#   DEBIAN_SUITE    default bookworm (python3 = 3.11, the Triton stub we ship)
#   TORCH_INDEX     extra pip index for torch (default: the CUDA 12.8 wheels; empty = CPU wheel / find-links)
#   WHEELS_DIR      a local wheel folder mounted read-only as pip --find-links during the build (optional)
#   OUT_DIR         where the oci-archives go (default build/images)
#   SANA_WM_IMAGE_REGISTRY  image name prefix (default ghcr.io/sana-wm-stack, as components/common/paths.py)
# Prints one line per image: name, archive, seconds. Root is needed for debootstrap and chroot builds.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 base|pipelines|annotate|train|serve ..." >&2; exit 2; }
: "${DEBIAN_MIRROR:?set DEBIAN_MIRROR (e.g. the mirror in /etc/apt/sources.list*)}"
SUITE=${DEBIAN_SUITE:-bookworm}
TORCH_INDEX=${TORCH_INDEX-https://download.pytorch.org/whl/cu128}
OUT=${OUT_DIR:-build/images}
REGISTRY=${SANA_WM_IMAGE_REGISTRY:-ghcr.io/sana-wm-stack}
cd "$(dirname "$0")/.."
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
ROOTFS_DIR=build/rootfs-$SUITE
ROOTFS_IMAGE=localhost/sana-wm-rootfs:$SUITE
BASE_IMAGE=localhost/sana-wm-base:$SUITE
mkdir -p "$OUT"
SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo

base_args=(--isolation chroot --layers)
build_args=("${base_args[@]}" --build-arg "TORCH_INDEX=$TORCH_INDEX")
# The host CA bundle lets pip verify the index from inside the chroot (not for the base image: its apt
# installs ca-certificates, which must write there); a wheel folder saves downloads.
[ -d /etc/ssl/certs ] && build_args+=(--volume /etc/ssl/certs:/etc/ssl/certs:ro)
if [ -n "${WHEELS_DIR:-}" ]; then
  build_args+=(--volume "$WHEELS_DIR:/opt/wheels:ro" --build-arg PIP_FIND_LINKS=/opt/wheels)
fi

ensure_base() {
  if ! podman image exists "$ROOTFS_IMAGE"; then
    if [ ! -x "$ROOTFS_DIR/usr/bin/apt-get" ]; then
      $SUDO debootstrap --variant=minbase "$SUITE" "$ROOTFS_DIR" "$DEBIAN_MIRROR"
    fi
    # The images' apt uses the same mirror (debootstrap wrote it into sources.list).
    echo "deb $DEBIAN_MIRROR $SUITE main" | $SUDO tee "$ROOTFS_DIR/etc/apt/sources.list" >/dev/null
    $SUDO tar -C "$ROOTFS_DIR" -c . | podman import - "$ROOTFS_IMAGE" >/dev/null
  fi
  if ! podman image exists "$BASE_IMAGE"; then
    buildah bud "${base_args[@]}" --build-arg "ROOTFS=$ROOTFS_IMAGE" -f infra/images/Containerfile.base \
      -t "$BASE_IMAGE" . >&2
  fi
}

for KIND in "$@"; do
  t0=$(date +%s)
  ensure_base
  [ "$KIND" = base ] && { echo "$BASE_IMAGE - $(( $(date +%s) - t0 ))s"; continue; }
  case "$KIND" in pipelines|annotate|train|serve) ;; *) echo "unknown image kind $KIND" >&2; exit 2;; esac
  IMAGE="$REGISTRY/sana-wm-$KIND:$VERSION"
  buildah bud "${build_args[@]}" --build-arg "BASE=$BASE_IMAGE" -f "infra/images/Containerfile.$KIND" \
    -t "$IMAGE" . >&2
  ARCHIVE="$OUT/sana-wm-$KIND-$VERSION.tar"
  rm -f "$ARCHIVE"
  buildah push "$IMAGE" "oci-archive:$ARCHIVE:$IMAGE" >&2
  # Import check (podman run does not work here): the entry points import inside the image, as its user.
  CTR=$(buildah from "$IMAGE")
  buildah run --isolation chroot "$CTR" -- python -c "import components, pipelines, serving; print('import ok')" >&2
  buildah rm "$CTR" >/dev/null
  echo "$IMAGE $ARCHIVE $(( $(date +%s) - t0 ))s"
done
