#!/usr/bin/env bash
# Installs Debian packages a test needs (CI machines start without them); refreshes the
# package lists only when the first attempt fails. Uses sudo when not root.
set -euo pipefail
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
if ! $sudo apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1; then
    $sudo apt-get update -qq >/dev/null 2>&1
    $sudo apt-get install -y --no-install-recommends "$@" >/dev/null
fi
echo "installed: $*"
