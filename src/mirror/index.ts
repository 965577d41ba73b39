/** mirror: the Distribution API server (embedded registry) and the pull-through mirror. See README.md. */
export { startRegistryServer, type RegistryServer, type RegistryServerOptions } from './registry-server.js';
export type { RegistryBackend, StoredManifest, PutManifestResult } from './backend.js';
export { StoreBackend } from './store-backend.js';
export { RepositoryMetadata, REPOSITORIES_DIR, tagRefName } from './repository-metadata.js';
export { UPLOADS_DIR } from './upload-sessions.js';
export { collectRegistryGarbage } from './gc.js';
export { DistributionError, toHttpError, type DistributionErrorCode } from './errors.js';
export { isValidRepositoryName, isValidTag } from './routes.js';
export { startMirrorServer, type MirrorServer, type MirrorServerOptions } from './mirror-server.js';
export {
  MirrorBackend,
  isUpstreamDown,
  type MirrorBackendOptions,
  type MirrorEvent,
} from './mirror-backend.js';
export { BlobFills, type BlobFillsOptions, type BlobSource } from './blob-fill.js';
export { CacheIndex, MIRROR_DIR } from './cache-index.js';
export {
  Router,
  normalizeUpstream,
  parseUpstreamFlag,
  upstreamComponent,
  type Destination,
  type UpstreamConfig,
} from './upstreams.js';
export { createUpstream, ReloadingDockerConfig, type Upstream } from './upstream-client.js';
export { mirrorSettings, loadMirrorConfigFile, parseDuration, type MirrorSettings } from './mirror-config.js';
export { HtpasswdAuthenticator, parseHtpasswd, parseBasic, type HtpasswdOptions } from './htpasswd.js';
export { limitConnections, type ConnectionLimitOptions, type ConnectionLimits } from './connection-limits.js';
export { MirrorMetrics, type MirrorMetricsOptions, type RequestRecord } from './metrics.js';
export { OpsEndpoints, startOpsServer, OPS_PATHS, type OpsServer } from './ops-endpoints.js';
