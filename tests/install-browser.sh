#!/bin/sh
# The report test drives a real headless Chromium: Debian's package, installed when missing.
set -e
[ -x /usr/bin/chromium ] && exit 0
SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
