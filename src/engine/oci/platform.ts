import { TerminalError } from '../errors.js';

/** An image platform as in the OCI index `platform` object. */
export interface Platform {
  readonly architecture: string;
  readonly os: string;
  readonly variant?: string;
  readonly 'os.version'?: string;
  readonly 'os.features'?: readonly string[];
}

const ARCH_ALIASES: Record<string, string> = {
  aarch64: 'arm64',
  x86_64: 'amd64',
  'x86-64': 'amd64',
  armhf: 'arm',
  armel: 'arm',
  i386: '386',
};

/** Normalizes a platform the way containerd's platforms package does (`aarch64` → `arm64`, `arm64/v8` → `arm64`). */
export function normalizePlatform(p: Platform): Platform {
  const os = p.os.toLowerCase();
  let architecture = p.architecture.toLowerCase();
  let variant = p.variant?.toLowerCase();
  const alias = ARCH_ALIASES[architecture];
  if (alias) {
    if (architecture === 'armhf') variant ??= 'v7';
    if (architecture === 'armel') variant ??= 'v6';
    architecture = alias;
  }
  if (architecture === 'arm64' && (variant === 'v8' || variant === '8')) variant = undefined;
  if (architecture === 'arm' && variant === undefined) variant = 'v7';
  if (architecture === 'arm' && variant && /^\d+$/.test(variant)) variant = `v${variant}`;
  if (architecture === 'amd64' && variant === 'v1') variant = undefined;
  const out: Platform = variant ? { os, architecture, variant } : { os, architecture };
  return p['os.version'] ? { ...out, 'os.version': p['os.version'] } : out;
}

/** Parses `os/arch[/variant]` (e.g. `linux/arm64/v8`); throws INVALID_ARGUMENT on malformed input. */
export function parsePlatform(spec: string): Platform {
  const parts = spec.split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((x) => !/^[A-Za-z0-9._-]+$/.test(x))) {
    throw new TerminalError(
      'INVALID_ARGUMENT',
      `invalid platform ${JSON.stringify(spec)}: want os/arch[/variant]`,
    );
  }
  const [os, architecture, variant] = parts as [string, string, string?];
  return normalizePlatform(variant ? { os, architecture, variant } : { os, architecture });
}

/** Formats a platform as `os/arch[/variant]`. */
export function formatPlatform(p: Platform): string {
  return [p.os, p.architecture, p.variant].filter(Boolean).join('/');
}

/**
 * True when an index entry's platform satisfies the wanted one: os and architecture must match after
 * normalization; the variant only when the wanted platform names one.
 */
export function platformMatches(want: Platform, have: Platform | undefined): boolean {
  if (!have || !have.os || !have.architecture) return false;
  const w = normalizePlatform(want);
  const h = normalizePlatform(have);
  if (w.os !== h.os || w.architecture !== h.architecture) return false;
  if (want.variant !== undefined && w.variant !== h.variant) return false;
  return true;
}

/** The platform of the running process, as an OCI platform. */
export function hostPlatform(): Platform {
  const archMap: Record<string, string> = {
    x64: 'amd64',
    arm64: 'arm64',
    arm: 'arm',
    ia32: '386',
    ppc64: 'ppc64le',
    s390x: 's390x',
    riscv64: 'riscv64',
  };
  return normalizePlatform({
    os: process.platform === 'win32' ? 'windows' : process.platform,
    architecture: archMap[process.arch] ?? process.arch,
  });
}

/**
 * The platform an image config declares (`os`, `architecture`, `variant`), normalized; undefined when the bytes
 * are not a JSON object naming both os and architecture.
 */
export function platformOfConfig(bytes: Uint8Array): Platform | undefined {
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof json !== 'object' || json === null) return undefined;
  const { os, architecture, variant } = json as Record<string, unknown>;
  if (typeof os !== 'string' || typeof architecture !== 'string' || !os || !architecture) return undefined;
  return normalizePlatform(
    typeof variant === 'string' && variant ? { os, architecture, variant } : { os, architecture },
  );
}
