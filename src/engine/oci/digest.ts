import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { TerminalError, VerificationError } from '../errors.js';

/** A validated content digest such as `sha256:<64 hex>`. */
export type Digest = string & { readonly __digest: unique symbol };

/** Algorithms we can verify, with the length of their hex encoding. */
const ALGORITHMS: Record<string, number> = { sha256: 64, sha512: 128 };

// OCI image-spec descriptor.md: algorithm-component and encoded grammar.
const DIGEST_RE = /^([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$/;

/** Parses and validates a digest string; throws INVALID_DIGEST on anything malformed or unsupported. */
export function parseDigest(value: string): Digest {
  const m = DIGEST_RE.exec(value);
  if (!m) throw new TerminalError('INVALID_DIGEST', `invalid digest ${JSON.stringify(value)}`);
  const [, alg, hex] = m as unknown as [string, string, string];
  const len = ALGORITHMS[alg];
  if (len === undefined)
    throw new TerminalError('INVALID_DIGEST', `unsupported digest algorithm ${alg} in ${value}`);
  if (hex.length !== len || !/^[a-f0-9]+$/.test(hex)) {
    throw new TerminalError(
      'INVALID_DIGEST',
      `invalid ${alg} digest ${JSON.stringify(value)}: want ${len} lowercase hex digits`,
    );
  }
  return value as Digest;
}

/** True when `value` is a well-formed, supported digest. */
export function isDigest(value: string): value is Digest {
  try {
    parseDigest(value);
    return true;
  } catch {
    return false;
  }
}

/** The algorithm part of a digest (`sha256`). */
export function digestAlgorithm(d: Digest): string {
  return d.slice(0, d.indexOf(':'));
}

/** The encoded (hex) part of a digest. */
export function digestHex(d: Digest): string {
  return d.slice(d.indexOf(':') + 1);
}

/** Digest of an in-memory buffer (manifests, configs: small documents only). */
export function digestOf(data: Uint8Array | string, algorithm = 'sha256'): Digest {
  return `${algorithm}:${createHash(algorithm).update(data).digest('hex')}` as Digest;
}

/** Creates a node hash object for the digest's algorithm. */
export function hasherFor(d: Digest): Hash {
  return createHash(digestAlgorithm(d));
}

/**
 * A pass-through stream that hashes and counts what flows through it. When `expected` is given it fails the
 * stream at the end if the digest or size differ (and early if the size is exceeded), so a consumer never
 * sees a successful end for content that does not match.
 */
export class DigestingStream extends Transform {
  private readonly hash: Hash;
  private readonly algorithm: string;
  /** Bytes seen so far. */
  bytes = 0;
  private result: Digest | undefined;

  constructor(
    private readonly expected?: { digest?: Digest; size?: number; what?: string },
    algorithm?: string,
  ) {
    super();
    this.algorithm = algorithm ?? (expected?.digest ? digestAlgorithm(expected.digest) : 'sha256');
    this.hash = createHash(this.algorithm);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    const size = this.expected?.size;
    if (size !== undefined && size >= 0 && this.bytes > size) {
      cb(sizeMismatch(this.expected?.what, size, this.bytes, true));
      return;
    }
    this.hash.update(chunk);
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    this.result = `${this.algorithm}:${this.hash.digest('hex')}` as Digest;
    const exp = this.expected;
    if (exp?.size !== undefined && exp.size >= 0 && exp.size !== this.bytes) {
      cb(sizeMismatch(exp.what, exp.size, this.bytes, false));
      return;
    }
    if (exp?.digest && exp.digest !== this.result) {
      cb(
        new VerificationError(
          'DIGEST_MISMATCH',
          `${exp.what ?? 'content'}: digest mismatch: expected ${exp.digest}, got ${this.result}`,
          { detail: { expected: exp.digest, actual: this.result } },
        ),
      );
      return;
    }
    cb();
  }

  /** The digest of everything seen; only valid after the stream ended. */
  get digest(): Digest {
    if (!this.result) throw new Error('DigestingStream: digest read before end of stream');
    return this.result;
  }
}

function sizeMismatch(
  what: string | undefined,
  expected: number,
  actual: number,
  over: boolean,
): VerificationError {
  return new VerificationError(
    'SIZE_MISMATCH',
    `${what ?? 'content'}: size mismatch: expected ${expected} bytes, got ${over ? 'more than that' : actual}`,
    { detail: { expected, actual } },
  );
}
