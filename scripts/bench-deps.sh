#!/bin/bash
# bench-deps.sh - install (as root, with apt-get) what `npm run bench` needs, only the missing ones:
#   docker-registry  the peer registry (CNCF distribution)   skopeo       the peer client
#   debootstrap      the base layer's Debian rootfs          pigz         parallel gzip for the corpus
#   time             GNU time, for peak RSS (/usr/bin/time)   umoci        the peer for unpack and commit
#   attr             setfattr/getfattr (xattrs, overlay)
#   buildah, runc    the peer of the build rows, and the runtime of both sides' RUN steps
#   busybox-static   the base of the build rows' --quick smoke run
# GNU tar, gzip and git are assumed (Debian essentials / the repository itself).
set -euo pipefail

# "command:package" pairs; a command with a slash is checked as a path
need=(docker-registry:docker-registry skopeo:skopeo umoci:umoci setfattr:attr debootstrap:debootstrap pigz:pigz /usr/bin/time:time buildah:buildah runc:runc /usr/bin/busybox:busybox-static)

missing=()
for pair in "${need[@]}"; do
    cmd=${pair%%:*} pkg=${pair#*:}
    if [[ $cmd == */* ]]; then [ -x "$cmd" ] && continue
    else command -v "$cmd" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1 && continue
    fi
    missing+=("$pkg")
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "bench-deps: all present (${need[*]##*:})"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "bench-deps: missing ${missing[*]}; run as root (or: sudo apt-get install ${missing[*]})" >&2
    exit 1
fi
echo "bench-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends "${missing[@]}"
