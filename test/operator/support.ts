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

/** Polls `probe` until it answers something other than undefined (errors count as not yet), or fails after the timeout. */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs = 120_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** Resolves true once `read` fails with 404 (the object is gone), undefined while it still answers. */
export function gone(read: () => Promise<unknown>): Promise<true | undefined> {
  return read().then(
    () => undefined,
    (err: { code?: number }) => (err.code === 404 ? true : undefined),
  );
}
