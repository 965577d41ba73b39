/**
 * The build pod's report: the compact JSON `strata build --spec` writes to the container's termination message
 * (`terminationMessagePath`) and the ImageBuild controller reads back from `pod.status.containerStatuses[].state
 * .terminated.message`. The kubelet keeps at most 4096 bytes of it, so the encoder cuts the free text (the head of
 * the failure message, keeping its tail) and never the digest or the reference.
 */
import { DIGEST_PATTERN, PINNED_REFERENCE_PATTERN } from './imagebuild.js';

/** Largest termination message the kubelet keeps (bytes). */
export const TERMINATION_MESSAGE_LIMIT = 4096;

/** Format version, so a newer controller can tell an older pod's report. */
export const BUILD_REPORT_VERSION = 1;

/** What a successful build reports. */
export interface BuildSuccessReport {
  readonly v: typeof BUILD_REPORT_VERSION;
  readonly ok: true;
  /** Manifest digest of the pushed (or built) image. */
  readonly digest: string;
  /** The primary reference pinned to the digest (`repo@sha256:…`). */
  readonly image: string;
  readonly steps: number;
  readonly cacheHits: number;
  /** RFC 3339, whole seconds. */
  readonly startedAt: string;
  readonly finishedAt: string;
}

/** What a failed build reports. */
export interface BuildFailureReport {
  readonly v: typeof BUILD_REPORT_VERSION;
  readonly ok: false;
  /** A condition reason (CamelCase), e.g. `StepFailed`. */
  readonly reason: string;
  /** The error and the tail of the build log; its head is cut first when the report is too long. */
  readonly message: string;
  readonly startedAt: string;
  readonly finishedAt: string;
}

/** A build pod's report. */
export type BuildReport = BuildSuccessReport | BuildFailureReport;

const ELLIPSIS = '…';
/** metav1.Condition's reason syntax. */
const REASON_PATTERN = /^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$/;

/**
 * JSON of a report, at most `limit` bytes (UTF-8). A failure's message loses its head (a leading `…` marks the
 * cut) until the whole fits; a success has no free text and always fits.
 */
export function encodeBuildReport(report: BuildReport, limit = TERMINATION_MESSAGE_LIMIT): string {
  const text = JSON.stringify(report);
  if (report.ok || Buffer.byteLength(text) <= limit) return text;
  const overhead = Buffer.byteLength(JSON.stringify({ ...report, message: '' }));
  // JSON escaping can grow a character to 6 bytes (\u001b); shrink until the encoded form fits.
  let keep = Math.max(0, limit - overhead - Buffer.byteLength(ELLIPSIS));
  for (;;) {
    const bytes = Buffer.from(report.message);
    let start = Math.max(0, bytes.length - keep);
    // Do not start inside a UTF-8 sequence.
    while (start < bytes.length && (bytes[start]! & 0xc0) === 0x80) start++;
    const message = ELLIPSIS + bytes.subarray(start).toString('utf8');
    const out = JSON.stringify({ ...report, message });
    if (Buffer.byteLength(out) <= limit || keep === 0) return out;
    // Shrink in proportion to the escaped size (escapes can make the JSON six times the bytes kept).
    const used = Buffer.byteLength(out) - overhead;
    keep = Math.min(keep - 1, Math.floor((keep * (limit - overhead)) / used));
    keep = Math.max(0, keep);
  }
}

function isString(v: unknown): v is string {
  return typeof v === 'string';
}

/**
 * Reads a termination message back. Undefined when it is no report of this format (a log tail written by
 * `FallbackToLogsOnError`, a message from another program, a newer version): the caller then uses it as text.
 */
export function decodeBuildReport(message: string | undefined): BuildReport | undefined {
  if (!message || message[0] !== '{') return undefined;
  let v: unknown;
  try {
    v = JSON.parse(message);
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null) return undefined;
  const r = v as Record<string, unknown>;
  if (r.v !== BUILD_REPORT_VERSION || !isString(r.startedAt) || !isString(r.finishedAt)) return undefined;
  if (r.ok === true) {
    // The pod is not trusted to write status: a digest or image the CRD would refuse is no report.
    if (!isString(r.digest) || !new RegExp(DIGEST_PATTERN).test(r.digest)) return undefined;
    if (!isString(r.image) || !new RegExp(PINNED_REFERENCE_PATTERN).test(r.image)) return undefined;
    if (!Number.isInteger(r.steps) || !Number.isInteger(r.cacheHits)) return undefined;
    return {
      v: BUILD_REPORT_VERSION,
      ok: true,
      digest: r.digest,
      image: r.image,
      steps: r.steps as number,
      cacheHits: r.cacheHits as number,
      startedAt: r.startedAt,
      finishedAt: r.finishedAt,
    };
  }
  if (r.ok === false && isString(r.reason) && isString(r.message)) {
    return {
      v: BUILD_REPORT_VERSION,
      ok: false,
      reason: REASON_PATTERN.test(r.reason) && r.reason.length <= 1024 ? r.reason : 'BuildFailed',
      message: r.message,
      startedAt: r.startedAt,
      finishedAt: r.finishedAt,
    };
  }
  return undefined;
}
