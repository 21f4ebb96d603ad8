#!/usr/bin/env bash
# The ARM packages (issue: ship it): builds the arm64 and armhf .debs with Debian's cross compilers, checks them
# with lintian, runs the library's unit tests under qemu-user, and smoke-tests each release binary under qemu
# (serve --demo, tools listed over the socket). Installs what it needs (apt, rustup targets, cargo-deb).
# Usage: tests/packaging/arm.sh [arm64] [armhf]   (default: both)
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$(pwd)/target}
ARCHES=("$@")
[ ${#ARCHES[@]} -gt 0 ] || ARCHES=(arm64 armhf)

command -v qemu-aarch64 >/dev/null && command -v qemu-arm >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-user >/dev/null
}
packaging/build-debs.sh "${ARCHES[@]}"

for arch in "${ARCHES[@]}"; do
  case $arch in
    arm64) triple=aarch64-unknown-linux-gnu qemu="qemu-aarch64 -L /usr/aarch64-linux-gnu" ;;
    armhf) triple=armv7-unknown-linux-gnueabihf qemu="qemu-arm -L /usr/arm-linux-gnueabihf" ;;
    *) echo "unknown architecture $arch (arm64, armhf)" >&2; exit 64 ;;
  esac
  deb=$(ls "$CARGO_TARGET_DIR/$triple"/debian/xyte-edge_*_"$arch".deb)
  echo "== $arch: lintian $(basename "$deb") ($(stat -c %s "$deb") bytes)"
  lintian --allow-root --fail-on error,warning "$deb"
  echo "== $arch: unit tests under qemu-user"
  runner_var="CARGO_TARGET_$(echo "$triple" | tr 'a-z-' 'A-Z_')_RUNNER"
  env "$runner_var=$qemu" cargo test --locked --target "$triple" --lib -- --test-threads=2
  echo "== $arch: serve --demo under qemu-user"
  tests/packaging/qemu-smoke.sh "$arch" "$CARGO_TARGET_DIR/$triple/release/xyte-edge"
  echo "$arch: stripped binary $(stat -c %s "$CARGO_TARGET_DIR/$triple/release/xyte-edge") bytes"
done
