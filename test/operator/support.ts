/** Shared needs of the operator tests. */

/**
 * The test node runs pods in private mount namespaces (unshare, bind and overlay mounts): root is required. A
 * failure, never a skip (see test/support/peers.ts).
 */
export function requireRoot(): void {
  if (process.getuid?.() !== 0)
    throw new Error(
      `the operator tests need root (the test node mounts pod volumes)${process.env.CI === 'true' ? ' (CI=true)' : ''}`,
    );
}
