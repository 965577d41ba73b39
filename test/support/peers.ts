import { execFileSync } from 'node:child_process';

/** Debian packages that provide the peer tools the tests use. */
export const PEER_PACKAGES: Record<string, string> = {
  'docker-registry': 'docker-registry',
  skopeo: 'skopeo',
  umoci: 'umoci',
  htpasswd: 'apache2-utils',
  setfattr: 'attr',
  getfattr: 'attr',
  zstd: 'zstd',
  openssl: 'openssl',
  runc: 'runc',
  busybox: 'busybox-static',
  buildah: 'buildah',
  debootstrap: 'debootstrap',
  'dpkg-deb': 'dpkg',
  containerd: 'containerd',
  ctr: 'containerd',
};

/**
 * Returns the absolute path of a peer tool. A missing peer is a test failure, never a skip: the project's own
 * `scripts/install-deps.sh` (run by `scripts/test.sh`) installs every peer the tests use.
 */
export function requirePeer(command: string): string {
  try {
    return execFileSync('sh', ['-c', `command -v ${command}`], { encoding: 'utf8' }).trim();
  } catch {
    const pkg = PEER_PACKAGES[command] ?? command;
    throw new Error(
      `test needs the peer tool '${command}' (Debian package ${pkg}); run: bash scripts/install-deps.sh`,
    );
  }
}
