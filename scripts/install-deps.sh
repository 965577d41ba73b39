#!/usr/bin/env bash
# install-deps.sh - install what Strata's tests need on a Debian machine (as root), only what is missing:
# the Debian peers the interoperability tests run (docker-registry, skopeo, umoci, htpasswd, openssl, buildah,
# containerd and its ctr), the OCI runtime builds run RUN steps with (runc), a static busybox for test roots, git
# for git build contexts, debootstrap (and dpkg-deb) for the Debian apt build test, GNU time (peak RSS in the
# benchmark), the envtest binaries (a real kube-apiserver, etcd, kube-controller-manager, kubectl and helm for the
# operator's tests), and the npm packages.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in docker-registry:docker-registry skopeo:skopeo umoci:umoci htpasswd:apache2-utils tar:tar gzip:gzip curl:curl setfattr:attr zstd:zstd openssl:openssl pigz:pigz runc:runc busybox:busybox-static buildah:buildah git:git debootstrap:debootstrap dpkg-deb:dpkg /usr/bin/time:time containerd:containerd xz:xz-utils; do
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

# The envtest binaries, unpacked (checksums verified) into $KUBEBUILDER_ASSETS or setup-envtest's own directory,
# from the workplace's shared/envtest folder (STRATA_ENVTEST_SRC names another). Tests fail without them.
assets=${KUBEBUILDER_ASSETS:-${XDG_DATA_HOME:-$HOME/.local/share}/kubebuilder-envtest/k8s/1.28.0-linux-amd64}
if ! [ -x "$assets/kube-apiserver" ] || ! [ -x "$assets/etcd" ] || ! [ -x "$assets/helm" ]; then
    src=""
    for d in "${STRATA_ENVTEST_SRC:-}" ../shared/envtest ../../shared/envtest /work/shared/envtest; do
        if [ -n "$d" ] && [ -f "$d/setup.sh" ]; then src=$d; break; fi
    done
    if [ -z "$src" ]; then
        echo "install-deps: the envtest binaries are not in $assets and no shared/envtest folder was found (set STRATA_ENVTEST_SRC or KUBEBUILDER_ASSETS)" >&2
        exit 1
    fi
    echo "install-deps: unpacking the envtest binaries from $src into $assets"
    bash "$src/setup.sh" "$assets" >/dev/null
fi
