#!/usr/bin/env bash
# Builds the .deb packages: amd64 natively, arm64 and armhf with Debian's cross compilers and rustup targets.
# Usage: packaging/build-debs.sh [amd64] [arm64] [armhf]   (default: all three)
# Output: $CARGO_TARGET_DIR/debian/xyte-edge_<version>-1_<arch>.deb. Installs what it needs (apt, rustup,
# cargo-deb), so it runs on a fresh Debian machine as root.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$(pwd)/target}
CARGO_DEB_VERSION=3.8.0
ARCHES=("$@")
[ ${#ARCHES[@]} -gt 0 ] || ARCHES=(amd64 arm64 armhf)

triple() {
  case $1 in
    amd64) echo x86_64-unknown-linux-gnu ;;
    arm64) echo aarch64-unknown-linux-gnu ;;
    armhf) echo armv7-unknown-linux-gnueabihf ;;
    *) echo "unknown architecture $1 (amd64, arm64, armhf)" >&2; exit 64 ;;
  esac
}

if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
fi
need_apt=()
for arch in "${ARCHES[@]}"; do
  case $arch in
    arm64) command -v aarch64-linux-gnu-gcc >/dev/null || need_apt+=(gcc-aarch64-linux-gnu) ;;
    armhf) command -v arm-linux-gnueabihf-gcc >/dev/null || need_apt+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross) ;;
  esac
done
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

for arch in "${ARCHES[@]}"; do
  t=$(triple "$arch")
  # Packages of earlier versions left in a reused build directory would be picked up beside the new one.
  rm -f "$CARGO_TARGET_DIR"/debian/xyte-edge_*_"$arch".deb "$CARGO_TARGET_DIR/$t"/debian/xyte-edge_*_"$arch".deb
  if [ "$arch" = amd64 ]; then
    cargo deb --locked
  else
    rustup target add "$t" >/dev/null
    cargo deb --locked --target "$t"
  fi
done
ls -l "$CARGO_TARGET_DIR"/debian/*.deb "$CARGO_TARGET_DIR"/*/debian/*.deb 2>/dev/null || true
