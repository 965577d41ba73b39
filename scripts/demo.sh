#!/usr/bin/env bash
# demo.sh - the quickstart's main job on the embedded default: start Strata's own registry on loopback, make an
# image on the spot, push it, pull it back into a second store, and show images / inspect / history.
# Then a container over it: change files, commit the change as a new layer, push that, save and load it, unpack it.
# Then build a FROM-scratch hello world from a Dockerfile into the registry and run it with runc.
# Last, the operator: a local control plane from the envtest binaries, the CRDs and the same hello world as an
# ImageBuild, `strata controller` and a node stand-in building it into the registry (demo/operator.ts).
# Needs only Node.js, npm and tar (as root, containers are overlayfs mounts; otherwise plain copies); the operator
# act needs root and the envtest binaries (bash scripts/install-deps.sh) and says so when they are missing.
# `bash scripts/demo.sh operator` runs the registry and the operator act only.
# Leaves nothing behind but the build, also when interrupted or failing.
set -euo pipefail
cd "$(dirname "$0")/.."
only=${1:-}
case "$only" in "" | operator) ;; *) echo "usage: bash scripts/demo.sh [operator]" >&2; exit 2 ;; esac
# npm packages exactly as locked, reinstalled when package-lock.json changed (as scripts/install-deps.sh does).
want=$(sha256sum <package-lock.json)
if [ "$(cat node_modules/.strata-lock.sha256 2>/dev/null)" != "$want" ]; then
    npm ci --no-audit --no-fund --loglevel=error
    echo "$want" >node_modules/.strata-lock.sha256
    rm -rf dist # built against other packages
fi
[ -f dist/src/cli/main.js ] && [ -f dist/demo/operator.js ] &&
    [ -z "$(find src demo test/support -newer dist/src/cli/main.js -name '*.ts' -print -quit)" ] || npm run -s build

work=$(mktemp -d)
strata() { node bin/strata.js "$@"; }
cleanup() {
    # The operator act stops what it started (controller, node stand-in, control plane) on SIGTERM.
    if [ -n "${op_pid:-}" ]; then kill -TERM "$op_pid" 2>/dev/null || true; wait "$op_pid" 2>/dev/null || true; fi
    # A container left by a failed run is unmounted and removed (it lives in the second store).
    if [ -n "${container:-}" ]; then STRATA_STORE="$work/store-b" node bin/strata.js rm -f "$container" >/dev/null 2>&1 || true; fi
    if [ -n "${reg_pid:-}" ]; then kill "$reg_pid" 2>/dev/null || true; fi
    wait 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
step() { printf '\n\033[1m$ strata'; printf ' %q' "$@"; printf '\033[0m\n'; strata "$@"; }

# 1. The embedded registry, on a free loopback port (it prints its URL first).
# node itself in the background (not the strata function): $! must be the server, so cleanup can stop it.
node bin/strata.js registry serve --listen 127.0.0.1:0 --root "$work/registry" >"$work/registry.out" 2>"$work/registry.log" &
reg_pid=$!
for _ in $(seq 100); do [ -s "$work/registry.out" ] && break; sleep 0.1; done
url=$(head -n 1 "$work/registry.out"); host=${url#http://}
echo "embedded registry: $url (storage $work/registry)"

# Acts 2-7: the engine on its own (skipped by `demo.sh operator`).
engine_acts() {
    # 2. An image made on the spot: a tiny root filesystem, imported as a one-layer image.
    mkdir -p "$work/rootfs/etc" "$work/rootfs/app"
    echo 'NAME="Strata demo"' >"$work/rootfs/etc/os-release"
    echo 'hello from strata' >"$work/rootfs/app/hello.txt"
    tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
    export STRATA_STORE="$work/store-a"
    step import -m "made by the quickstart" "$work/rootfs.tar" demo/hello:1

    # 3. Push it, then push again: the second time every blob is already there.
    step push demo/hello:1 "$host/demo/hello:1"
    step push demo/hello:1 "$host/demo/hello:1"

    # 4. Pull it back into a second, empty store and look at it.
    export STRATA_STORE="$work/store-b"
    step pull "$host/demo/hello:1"
    step images
    step history "$host/demo/hello:1"
    step inspect "$host/demo/hello:1"

    # 5. A container: a writable root over the image; change it and commit the change as a new layer.
    container=demo-box
    step create --name "$container" "$host/demo/hello:1"
    root=$(strata mount "$container")
    echo "container root: $root"
    echo 'a file added in the container' >"$root/app/added.txt"
    rm "$root/etc/os-release"
    step commit -m "add a file, drop os-release" -a "quickstart <demo@strata.dev>" -c 'CMD ["cat", "/app/added.txt"]' "$container" "$host/demo/hello:2"
    step history "$host/demo/hello:2"
    step push "$host/demo/hello:2"
    step rm "$container"
    container=""

    # 6. save / load / unpack: the committed image as a docker-archive, loaded into a third store, unpacked flat.
    step save -o "$work/hello.tar" "$host/demo/hello:2"
    export STRATA_STORE="$work/store-c"
    step load -i "$work/hello.tar"
    step unpack "$host/demo/hello:2" "$work/flat"
    echo "unpacked tree:"; (cd "$work/flat" && find . -mindepth 1 | sort)

    # 7. Build the hello world of the seeds (FROM scratch, COPY a static binary, CMD) straight into the embedded
    # registry, and run it with runc. The binary: a static C hello when a C compiler is here, else busybox-static.
    export STRATA_STORE="$work/store-d"
    mkdir -p "$work/hello-ctx"
    if command -v gcc >/dev/null 2>&1 && printf '#include <stdio.h>\nint main(void){puts("Hello from a Strata build!");return 0;}\n' >"$work/hello.c" &&
        gcc -static -Os -o "$work/hello-ctx/hello" "$work/hello.c" 2>/dev/null; then
        printf 'FROM scratch\nCOPY hello /hello\nCMD ["/hello"]\n' >"$work/hello-ctx/Dockerfile"
    elif file -L /usr/bin/busybox 2>/dev/null | grep -q 'statically linked'; then
        cp /usr/bin/busybox "$work/hello-ctx/hello"
        printf 'FROM scratch\nCOPY hello /hello\nCMD ["/hello", "echo", "Hello from a Strata build!"]\n' >"$work/hello-ctx/Dockerfile"
    fi
    if [ -f "$work/hello-ctx/Dockerfile" ]; then
        echo; cat "$work/hello-ctx/Dockerfile"
        step build -t "$host/demo/hello-world:1" --push "$work/hello-ctx"
        if [ "$(id -u)" = 0 ] && command -v runc >/dev/null 2>&1; then
            step run --rm "$host/demo/hello-world:1"
        else
            echo "(not running it: strata run needs root and runc — apt-get install runc)"
        fi
    else
        echo "(no C compiler and no busybox-static here: the build example is skipped)"
    fi
}
if [ "$only" != operator ]; then engine_acts; fi

# 8. The operator (demo/operator.ts prints what happens). In the background and waited for, so that a signal to
# this script runs cleanup at once, which stops the act; a Ctrl-C reaches both anyway.
printf '\n\033[1mThe operator\033[0m\n'
node dist/demo/operator.js --registry "$host" &
op_pid=$!
op_status=0
wait "$op_pid" || op_status=$?
op_pid=""
case $op_status in
0) operator_done=", and strata controller built examples/hello into $host/examples/hello:cluster" ;;
3) operator_done=" (the operator act was skipped)" ;;
*) exit "$op_status" ;;
esac
if [ "$only" = operator ]; then
    printf '\ndemo done: the embedded registry at %s%s\n' "$host" "$operator_done"
else
    printf '\ndemo done: built, pushed, pulled, committed, saved, loaded and unpacked %s/demo/hello, and built %s/demo/hello-world, through the embedded registry%s\n' "$host" "$host" "$operator_done"
fi
