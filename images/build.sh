#!/bin/sh
# Builds valet/busybox:latest (images/busybox/Dockerfile) without a registry:
# the busybox binary comes from Debian's busybox-static package.
#
#   images/build.sh [tag]        default tag: valet/busybox:latest
set -eu
tag="${1:-valet/busybox:latest}"
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Test processes may build at once: one at a time, so apt's lists are refreshed by one.
if command -v flock >/dev/null; then
  exec 9>"${TMPDIR:-/tmp}/valet-images-build.lock"
  flock 9
fi

cd "$work"
# A fresh machine may have no package lists yet: refresh them once and retry.
apt-get download busybox-static >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get download busybox-static >/dev/null; }
dpkg-deb -x busybox-static_*.deb pkg
bin="pkg/bin/busybox"
[ -x "$bin" ] || { echo "build.sh: no bin/busybox in busybox-static" >&2; exit 1; }

ctx="$work/ctx"
root="$ctx/rootfs"
mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/usr/sbin" \
  "$root/tmp" "$root/etc" "$root/root" "$root/workspace" "$root/proc" "$root/dev" "$root/sys"
chmod 1777 "$root/tmp"
chmod 0777 "$root/workspace"
cp "$bin" "$root/bin/busybox"
chmod 0755 "$root/bin/busybox"
# One symlink per applet, where busybox itself would install it.
"$bin" --list-full | while read -r applet; do
  [ "$applet" = "bin/busybox" ] && continue
  ln -sf /bin/busybox "$root/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
cp "$here/busybox/Dockerfile" "$ctx/Dockerfile"
docker build -q -t "$tag" "$ctx"
