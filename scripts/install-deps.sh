#!/bin/sh
# Installs the Debian packages strata builds and tests with — only those missing,
# so that on a prepared machine this costs one dpkg query.
set -e
PKGS="build-essential pkg-config libjansson-dev libopenblas-dev libpcre2-dev libutf8proc-dev
      libmicrohttpd-dev libuv1-dev libcriterion-dev zlib1g-dev python3-numpy python3-requests nginx-light"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "installing:$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
