#!/usr/bin/env bash
# Build one image per kind without a container registry (STACK.md recipe):
# debootstrap --variant=minbase -> podman import -> buildah bud --isolation chroot -> oci-archive.
# Usage: infra/build_image.sh KIND [OUT_DIR]   KIND in pipelines|annotate|train|serve. Not run in tests.
set -euo pipefail
KIND=${1:?usage: build_image.sh pipelines|annotate|train|serve [OUT_DIR]}
OUT=${2:-build/images}
cd "$(dirname "$0")/.."
VERSION=$(.venv/bin/python -c 'from components.common.paths import PACKAGE_VERSION; print(PACKAGE_VERSION)')
IMAGE=$(.venv/bin/python -c "from components.common.paths import image_for; print(image_for('$KIND'))")
ROOTFS=build/rootfs-bookworm
mkdir -p "$OUT" build
if ! podman image exists localhost/debian-base:bookworm; then
  [ -d "$ROOTFS" ] || sudo debootstrap --variant=minbase bookworm "$ROOTFS" http://deb.debian.org/debian
  sudo tar -C "$ROOTFS" -c . | podman import - localhost/debian-base:bookworm
fi
# The host CA bundle is mounted so pip can reach the package index from inside the chroot build.
buildah bud --isolation chroot --volume /etc/ssl/certs:/etc/ssl/certs:ro \
  -f "infra/images/Containerfile.$KIND" -t "$IMAGE" .
buildah push "$IMAGE" "oci-archive:$OUT/sana-wm-$KIND-$VERSION.tar:$IMAGE"
# Smoke test (podman run does not work here): import the entry points inside the image.
CTR=$(buildah from "$IMAGE")
buildah run --isolation chroot "$CTR" -- python -c "import components, pipelines; print('ok')"
buildah rm "$CTR" >/dev/null
echo "$OUT/sana-wm-$KIND-$VERSION.tar ($IMAGE)"
