/** mirror: the Distribution API server (embedded registry; later a pull-through mirror). See README.md. */
export { startRegistryServer, type RegistryServer, type RegistryServerOptions } from './registry-server.js';
export type { RegistryBackend, StoredManifest, PutManifestResult } from './backend.js';
export { StoreBackend } from './store-backend.js';
export { RepositoryMetadata, REPOSITORIES_DIR, tagRefName } from './repository-metadata.js';
export { UPLOADS_DIR } from './upload-sessions.js';
export { collectRegistryGarbage } from './gc.js';
export { DistributionError, toHttpError, type DistributionErrorCode } from './errors.js';
export { isValidRepositoryName, isValidTag } from './routes.js';
