#!/usr/bin/env bash
# Prints the path of the amd64 .deb of the previous release, 0.1.0 (commit 8454fc3, tagged v0.1.0), building it
# from this clone's history if it is not cached yet, so the upgrade test (tests/packaging/systemd-boot.sh) installs
# what operators actually have. The commit is named by its hash, so a clone without tags works; a shallow clone
# lacks it and is refused with a message. The build uses that tree's own packaging/build-debs.sh (cargo-deb) with a
# target directory of its own, so it never mixes with the current build.
# Cache: $CARGO_TARGET_DIR/previous/xyte-edge_0.1.0-1_amd64.deb (the sources and build directory are removed after a
# successful build: the package is all that is kept). Build output goes to stderr; stdout is only the path.
# Usage: tests/packaging/previous-deb.sh
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$(pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
RELEASE=0.1.0
COMMIT=8454fc37d4509cb1014a0ae9aada21934f987857
DIR=$CARGO_TARGET_DIR/previous
DEB=$DIR/xyte-edge_${RELEASE}-1_amd64.deb
fail() { echo "previous-deb: FAIL: $*" >&2; exit 1; }

if [ -s "$DEB" ]; then
  echo "$DEB"
  exit 0
fi

if ! git cat-file -e "$COMMIT^{commit}" 2>/dev/null; then
  if [ "$(git rev-parse --is-shallow-repository 2>/dev/null)" = true ]; then
    fail "this is a shallow clone: release $RELEASE (commit ${COMMIT:0:7}) is not in it; expected the full history" \
      "(run: git fetch --unshallow)"
  fi
  fail "commit ${COMMIT:0:7} (release $RELEASE, tag v$RELEASE) is not in this clone; expected it in the history" \
    "(run: git fetch origin)"
fi

SRC=$DIR/src-${COMMIT:0:7}
rm -rf "$SRC"
mkdir -p "$SRC"
git archive "$COMMIT" | tar -x -C "$SRC"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$SRC/Cargo.toml" | head -1)
[ "$version" = "$RELEASE" ] || fail "commit ${COMMIT:0:7} has version '$version' in Cargo.toml, expected $RELEASE"

echo "previous-deb: building xyte-edge $RELEASE (commit ${COMMIT:0:7}) with its own packaging/build-debs.sh" >&2
CARGO_TARGET_DIR=$DIR/target "$SRC/packaging/build-debs.sh" amd64 >&2
built=$DIR/target/debian/xyte-edge_${RELEASE}-1_amd64.deb
[ -s "$built" ] || fail "expected $built after the build, found: $(ls "$DIR/target/debian" 2>&1 | tr '\n' ' ')"
cp "$built" "$DEB.tmp"
mv "$DEB.tmp" "$DEB"
rm -rf "$SRC" "$DIR/target"
echo "$DEB"
