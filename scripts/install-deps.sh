#!/usr/bin/env bash
# install-deps.sh - install what Strata's tests need on a Debian machine (as root), only what is missing:
# the Debian peers the interoperability tests run (docker-registry, skopeo, umoci, htpasswd, openssl, buildah,
# containerd and its ctr), the OCI runtime builds run RUN steps with (runc), a static busybox for test roots, git
# for git build contexts, debootstrap (and dpkg-deb) for the Debian apt build test, GNU time (peak RSS in the
# benchmark), and the npm packages.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in docker-registry:docker-registry skopeo:skopeo umoci:umoci htpasswd:apache2-utils tar:tar gzip:gzip curl:curl setfattr:attr zstd:zstd openssl:openssl pigz:pigz runc:runc busybox:busybox-static buildah:buildah git:git debootstrap:debootstrap dpkg-deb:dpkg /usr/bin/time:time containerd:containerd; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "install-deps: missing Debian packages: ${need[*]} (run as root, or: sudo apt-get install ${need[*]})" >&2
        exit 1
    fi
    echo "install-deps: apt-get install ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# npm packages, exactly as locked; skipped when node_modules was installed from this very lock file.
want=$(sha256sum <package-lock.json)
if [ "$(cat node_modules/.strata-lock.sha256 2>/dev/null)" != "$want" ]; then
    npm ci --no-audit --no-fund --loglevel=error
    echo "$want" >node_modules/.strata-lock.sha256
fi
