#!/bin/sh
# Build the kubemetrics image where no container registry is reachable, only Debian's package
# archive (and PyPI/crates.io for the build itself): make a Debian 12 + python3 base image from
# Debian packages with debootstrap, then build Containerfile on top of it with buildah.
#
#   deploy/scripts/build-image-offline.sh [TAG]        (as root; needs buildah and debootstrap)
#
# Default TAG: localhost/kubemetrics:<version>. Chroot isolation, so it works inside a container
# or VM without user namespaces; set STORAGE_DRIVER=vfs where overlayfs is unavailable. Behind a TLS-intercepting
# proxy, set BUILD_CA_BUNDLE to a CA bundle file that trusts it (e.g. the host's
# /etc/ssl/certs/ca-certificates.crt); it is mounted into the build steps, not into the image.
set -eu

root=$(cd "$(dirname "$0")/../.." && pwd)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n 1)
tag=${1:-localhost/kubemetrics:$version}
base=localhost/kubemetrics-base:python3-bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

for tool in buildah debootstrap; do
    command -v "$tool" >/dev/null 2>&1 || { echo "$0: $tool is required (apt-get install $tool)" >&2; exit 1; }
done
buildah() { command buildah ${STORAGE_DRIVER:+--storage-driver "$STORAGE_DRIVER"} "$@"; }

if ! buildah inspect --type image "$base" >/dev/null 2>&1; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$work/rootfs" "$mirror"
    # The same suites as Debian's official images: rustc-web/cargo-web live in bookworm-security.
    cat > "$work/rootfs/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main
SOURCES
    rm -rf "$work/rootfs/var/lib/apt/lists/"* "$work/rootfs/var/cache/apt/archives/"*.deb
    ctr=$(buildah from scratch)
    mnt=$(buildah mount "$ctr")
    cp -a "$work/rootfs/." "$mnt/"
    buildah umount "$ctr"
    buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env LANG=C.UTF-8 --cmd python3 "$ctr"
    buildah commit --rm "$ctr" "$base"
fi

set -- --build-arg PYTHON_IMAGE="$base"
if [ -n "${BUILD_CA_BUNDLE:-}" ]; then
    set -- "$@" --volume "$BUILD_CA_BUNDLE:/run/build-ca-bundle.pem:ro" \
        --build-arg BUILD_CA_BUNDLE=/run/build-ca-bundle.pem
fi
buildah bud --isolation chroot --layers=false "$@" -t "$tag" -f "$root/Containerfile" "$root"
echo "built $tag"
