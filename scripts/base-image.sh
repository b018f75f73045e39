#!/usr/bin/env bash
# Build the stage images' parent from Debian packages when no registry can be
# reached (nothing can be pulled here, so python:3.11-slim is not available).
#
#   scripts/base-image.sh [IMAGE]     (default kfx/python-base:3.11-bookworm)
#
# debootstrap --variant=minbase bookworm with python3, python3-venv and
# ca-certificates, from the machine's configured Debian mirror, then
# `docker import`. Skipped when IMAGE already exists. The result plays the
# part of python:3.11-slim: Python 3.11 (Debian's 3.11.2 at /usr/bin/python3)
# and a CA bundle; the Dockerfiles create /opt/venv on top of either parent.
set -euo pipefail

IMAGE="${1:-${BASE_IMAGE:-kfx/python-base:3.11-bookworm}}"
SUITE="${KFX_BASE_SUITE:-bookworm}"
say() { echo "base-image: $*" >&2; }

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  say "$IMAGE exists, skipping"
  exit 0
fi

# The mirror this machine already uses (deb822 or one-line format).
mirror="${KFX_DEBIAN_MIRROR:-}"
if [ -z "$mirror" ] && [ -r /etc/apt/sources.list.d/debian.sources ]; then
  mirror=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
fi
if [ -z "$mirror" ] && [ -r /etc/apt/sources.list ]; then
  mirror=$(awk '$1=="deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list)
fi
mirror="${mirror:-http://deb.debian.org/debian}"

if ! command -v debootstrap >/dev/null 2>&1; then
  say "installing debootstrap"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq </dev/null
  apt-get install -y -qq --no-install-recommends debootstrap </dev/null >/dev/null
fi

rootfs=$(mktemp -d /tmp/kfx-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
say "debootstrap $SUITE from $mirror into $rootfs"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  "$SUITE" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || { tail -n 30 "$rootfs.log" >&2; exit 1; }
rm -f "$rootfs.log"

# Slim it like python:*-slim: no apt lists, caches, docs or man pages.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
       "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/usr/share/doc/* \
       "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/*.log
# Same sources as the host so `apt-get install` in a builder stage works.
if [ -r /etc/apt/sources.list.d/debian.sources ]; then
  cp /etc/apt/sources.list.d/debian.sources "$rootfs/etc/apt/sources.list.d/debian.sources"
  : >"$rootfs/etc/apt/sources.list"
fi

py=$(chroot "$rootfs" python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
say "python $py; importing as $IMAGE"
tar --numeric-owner -C "$rootfs" -c . | docker import \
  -c 'ENV LANG=C.UTF-8' \
  -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c 'CMD ["python3"]' \
  -m "debootstrap --variant=minbase $SUITE + python3 python3-venv ca-certificates (python $py)" \
  - "$IMAGE" >/dev/null
say "built $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE") bytes)"
