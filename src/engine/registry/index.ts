/** Public API of `engine/registry`: the Distribution API client, its auth, credentials and retry policy. */
export type { CallOptions, RegistryApi, RepositoryRef, UploadOptions } from './types.js';
export {
  DEFAULT_CHUNK_SIZE,
  RegistryClient,
  type ListTagsOptions,
  type RegistryClientOptions,
} from './client.js';
export {
  Authenticator,
  DEFAULT_TOKEN_LIFETIME_S,
  parseTokenResponse,
  parseWwwAuthenticate,
  repositoryScope,
  type AuthChallenge,
  type AuthenticatorOptions,
  type TokenHttp,
} from './auth.js';
export {
  DOCKER_HUB_HELPER_URL,
  DockerConfigCredentials,
  StaticCredentials,
  decodeAuthEntry,
  defaultDockerConfigPath,
  normalizeRegistryKey,
  type BasicCredentials,
  type CredentialProvider,
  type Credentials,
  type DockerConfigCredentialsOptions,
  type IdentityTokenCredentials,
} from './credentials.js';
export {
  MAX_ERROR_BODY_BYTES,
  errorCodeFor,
  isNetworkError,
  isRetryableStatus,
  tlsErrorFor,
  parseOciErrors,
  registryErrorFor,
  type ErrorContext,
  type OciErrorEntry,
} from './errors.js';
export {
  DEFAULT_RETRY_POLICY,
  abortableSleep,
  backoffDelay,
  isRetryable,
  parseRetryAfter,
  retryDelay,
  retryPolicy,
  type RetryPolicy,
  type SleepFn,
} from './retry.js';
export {
  hostnameOf,
  isLoopbackHost,
  matchesRegistry,
  parseContentRange,
  parseLinkNext,
  parseUploadRangeEnd,
  registryBaseUrl,
  registryScheme,
} from './wire.js';
export { DEFAULT_CERTS_DIRS, readRegistryCerts, tlsSettingsFor, type RegistryCerts } from './certs.js';
export type { TlsSettings } from './http.js';
