/** engine/store: a content-addressed blob store on disk laid out as an OCI image layout. See README.md. */
export * from './types.js';
export {
  FsStore,
  REF_NAME_ANNOTATION,
  INGEST_DIR,
  DEFAULT_READ_LIMIT,
  type FsStoreOptions,
} from './fs-store.js';
export { acquireLock, LockTimeoutError, type LockOptions, type HeldLock } from './lock.js';
export { childrenOf, kindOf, type ChildRef, type BlobKind } from './walk.js';
export {
  DEFAULT_LEASE_TTL_MS,
  LEASES_DIR,
  LeaseExpiredError,
  type Lease,
  type LeaseOptions,
  type LeaseRecord,
} from './leases.js';
export { ingestName } from './ingest.js';
export { RootSet, ROOTS_DIR, allRootDigests, type RootEntry } from './roots.js';
