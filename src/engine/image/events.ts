import type { Digest } from '../oci/digest.js';

/** How a blob got to its destination. */
export type BlobOutcome = 'copied' | 'exists' | 'mounted' | 'skipped-foreign';

/** Progress of an engine operation, emitted as plain objects (the CLI draws bars, controllers count). */
export type ProgressEvent =
  | {
      readonly type: 'resolved';
      readonly name: string;
      readonly digest: Digest;
      readonly mediaType: string;
      readonly platforms?: readonly string[];
    }
  | {
      readonly type: 'blob-start';
      readonly digest: Digest;
      readonly size: number;
      readonly kind: 'config' | 'layer';
    }
  | { readonly type: 'blob-progress'; readonly digest: Digest; readonly bytes: number; readonly size: number }
  | {
      readonly type: 'blob-done';
      readonly digest: Digest;
      readonly size: number;
      readonly outcome: BlobOutcome;
    }
  | {
      readonly type: 'manifest';
      readonly digest: Digest;
      readonly mediaType: string;
      readonly platform?: string;
    }
  | { readonly type: 'note'; readonly message: string }
  | {
      readonly type: 'done';
      readonly name: string;
      readonly digest: Digest;
      readonly bytesTransferred: number;
    };

/** Receives progress events; must not throw. */
export type ProgressListener = (event: ProgressEvent) => void;
