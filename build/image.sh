#!/usr/bin/env bash
# Builds the rowcast container image from the working tree, offline: a
# static binary, the host's CA bundle and build/rootfs/etc/{passwd,group}
# are put in a temporary build context with build/Containerfile, which
# starts FROM scratch, so nothing is pulled.
#
#   build/image.sh [IMAGE]      # default rowcast:local; "make image" runs this
#
# Environment: VERSION (default: git describe --tags --always --dirty, or
# dev), PODMAN (default podman; CI builds with podman, docker should do as well), GO
# (default go), CA_BUNDLE (default /etc/ssl/certs/ca-certificates.crt, from
# Debian's ca-certificates package).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

image=${1:-${IMAGE:-rowcast:local}}
podman=${PODMAN:-podman}
go=${GO:-go}
ca_bundle=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)

if ! command -v "$podman" >/dev/null 2>&1; then
	echo "image.sh: $podman not found: install podman (Debian: apt-get install podman runc) or set PODMAN=docker" >&2
	exit 1
fi
if [ ! -s "$ca_bundle" ]; then
	echo "image.sh: CA bundle $ca_bundle not found: install ca-certificates (Debian: apt-get install ca-certificates) or set CA_BUNDLE" >&2
	exit 1
fi

ctx=$(mktemp -d "${TMPDIR:-/tmp}/rowcast-image-XXXXXX")
trap 'rm -rf "$ctx"' EXIT
rootfs=$ctx/rootfs

# Static (no cgo), stripped, the version stamped as "rowcast version" shows it.
CGO_ENABLED=0 "$go" build -trimpath -ldflags "-s -w -X main.version=$version" -o "$rootfs/rowcast" ./cmd/rowcast
chmod 0755 "$rootfs/rowcast"
install -D -m 0644 build/rootfs/etc/passwd "$rootfs/etc/passwd"
install -D -m 0644 build/rootfs/etc/group "$rootfs/etc/group"
install -D -m 0644 "$ca_bundle" "$rootfs/etc/ssl/certs/ca-certificates.crt"
cp build/Containerfile "$ctx/Containerfile"

opts=()
if "$podman" build --help 2>/dev/null | grep -q -- '--format'; then
	# podman: the docker format keeps HEALTHCHECK, which the OCI image
	# config lacks; no intermediate images left behind.
	opts=(--format docker --layers=false)
fi
"$podman" build "${opts[@]}" \
	--build-arg "VERSION=$version" --build-arg "REVISION=$revision" \
	-t "$image" -f "$ctx/Containerfile" "$ctx"
echo "image.sh: built $image (rowcast $version)"
