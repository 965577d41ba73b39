/**
 * An ImageBuild travels to its build pod in environment variables (no extra object to create and clean up). Linux
 * caps one environment string at 128 KiB (MAX_ARG_STRLEN) while a spec may hold a 1 MiB inline Dockerfile, so a
 * long value is cut into parts: `NAME` holds the first, `NAME_1`, `NAME_2`, … the rest and `NAME_PARTS` their
 * count. The whole is capped well below the kernel's total for arguments and environment (ARG_MAX, 2 MiB with the
 * default 8 MiB stack). The kubelet expands `$(VAR)` and turns `$$` into `$` in an env var's value, so every `$` is
 * written doubled: the process sees the spec as it was.
 */

/** UTF-16 units per part: at most 3 UTF-8 bytes each (a `$`, doubled, 2), so a part stays under 128 KiB. */
export const SPEC_ENV_PART_UNITS = 32 * 1024;
/** The most UTF-8 bytes a spec may take in the environment, all parts together. */
export const SPEC_ENV_MAX_BYTES = 1024 * 1024;

/** Escapes a value for an env var's `value` field: the kubelet turns `$$` back into `$` and expands nothing. */
export function kubeletLiteral(value: string): string {
  return value.replaceAll('$', '$$$$');
}

/**
 * The variables carrying `value` under `name` (one when it fits, else parts and a count), each `$` doubled for the
 * kubelet ({@link kubeletLiteral}; a part is cut before escaping, so no `$$` pair is split).
 */
export function specEnvVars(name: string, value: string): Array<{ name: string; value: string }> {
  if (value.length <= SPEC_ENV_PART_UNITS) return [{ name, value: kubeletLiteral(value) }];
  const parts: string[] = [];
  for (let at = 0; at < value.length;) {
    let end = Math.min(at + SPEC_ENV_PART_UNITS, value.length);
    // Never split a surrogate pair: each part must be valid UTF-16 on its own.
    const last = value.charCodeAt(end - 1);
    if (end < value.length && last >= 0xd800 && last <= 0xdbff) end--;
    parts.push(value.slice(at, end));
    at = end;
  }
  return [
    ...parts.map((p, i) => ({ name: i === 0 ? name : `${name}_${i}`, value: kubeletLiteral(p) })),
    { name: `${name}_PARTS`, value: String(parts.length) },
  ];
}

/**
 * The value {@link specEnvVars} spread over `name`'s variables, read through `get`; undefined when `name` is not
 * set. Throws RangeError naming the variable when a part is missing or the count is not a number.
 */
export function readSpecEnv(name: string, get: (k: string) => string | undefined): string | undefined {
  const first = get(name);
  if (first === undefined) return undefined;
  const count = get(`${name}_PARTS`);
  if (count === undefined) return first;
  const n = Number(count);
  if (!Number.isSafeInteger(n) || n < 1 || n > 1024)
    throw new RangeError(`$${name}_PARTS is ${JSON.stringify(count)}, not a count of parts`);
  let value = first;
  for (let i = 1; i < n; i++) {
    const part = get(`${name}_${i}`);
    if (part === undefined) throw new RangeError(`$${name}_${i} is missing (${name}_PARTS says ${n} parts)`);
    value += part;
  }
  return value;
}
