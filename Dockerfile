# Strata's image: the CLI, the controller, the mirror and the node agent (one image, the role is the command).
# See docs/adr/0027-strata-image.md. Build it with `strata build -t strata:dev .` or `buildah bud -t strata:dev .`.
#
# BASE must be a Debian bookworm image with Node.js >= 20.18 and npm on PATH (as docker.io/library/node:20-bookworm-slim
# is). The default names the local base that test/packaging/dockerfile.test.ts makes (a debootstrap minbase root plus
# the test machine's node and npm), as no image hub is reachable where Strata is tested; elsewhere pass
# --build-arg BASE=docker.io/library/node:20-bookworm-slim.
ARG BASE=localhost/strata-base:bookworm

# Compiles and bundles the TypeScript (dist/bundle, which bin/strata.js loads).
FROM ${BASE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
# No install scripts: esbuild finds its binary in its platform package without its postinstall.
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY . .
RUN npm run build

# The runtime dependencies: the bundle inlines every package but its externals (pino), loaded from node_modules;
# runtime-deps.mjs keeps only them and what they need, as package-lock.json resolves them.
FROM ${BASE} AS deps
WORKDIR /src
COPY package.json package-lock.json ./
COPY scripts/bundle-externals.mjs scripts/runtime-deps.mjs scripts/
RUN npm ci --omit=dev --no-audit --no-fund --ignore-scripts && node scripts/runtime-deps.mjs

FROM ${BASE}
# What the engine runs besides node: runc (RUN steps, `strata run`), mount/umount (overlay: util-linux's mount is
# in every Debian root), setfattr/getfattr (attr: xattrs of layers), pigz and zstd (layer compression), xz-utils
# and bzip2 (ADD of compressed archives), git (git build contexts), ca-certificates (git over https).
RUN apt-get update \
 && apt-get install -y --no-install-recommends runc attr pigz zstd xz-utils bzip2 git ca-certificates \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
# The non-root identity of the controller and the mirror; build pods and the node agent run as root (privileged),
# which their pod specs ask for with runAsUser: 0.
RUN groupadd --system --gid 65532 strata \
 && useradd --system --uid 65532 --gid 65532 --home-dir /var/lib/strata --create-home --shell /usr/sbin/nologin strata
WORKDIR /opt/strata
COPY package.json ./
COPY bin bin
COPY --from=deps /src/node_modules node_modules
COPY --from=build /src/dist/bundle dist/bundle
RUN ln -s /opt/strata/bin/strata.js /usr/local/bin/strata && strata --version
ENV STRATA_STORE=/var/lib/strata/store NODE_ENV=production
WORKDIR /var/lib/strata
USER 65532:65532
CMD ["strata", "--help"]
