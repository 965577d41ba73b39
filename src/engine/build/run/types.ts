/**
 * The contract between the build executor and the OCI runtime runner (`run/`): run one RUN step's process in a
 * prepared, mounted root through runc, stream its output, and leave the root as the step left it — with nothing
 * of the runtime's own machinery in it. Change it only with both sides.
 */

/** The numeric identity a step runs as (resolved from USER through the root's /etc/passwd and /etc/group). */
export interface RunUser {
  readonly uid: number;
  readonly gid: number;
  readonly additionalGids: readonly number[];
}

/** One RUN step to execute. */
export interface RunSpec {
  /** The container's merged root (an overlay mount the caller made; the runner never mounts or unmounts it). */
  readonly rootfs: string;
  /** argv: for the shell form the caller already prefixed the image's SHELL (`["/bin/sh","-c",cmd]`). */
  readonly args: readonly string[];
  /** `KEY=value` entries: the image's ENV plus the ARGs in effect, as docker passes them. */
  readonly env: readonly string[];
  /** Absolute working directory inside the root (created by the runner when missing, owned as docker does). */
  readonly cwd: string;
  readonly user: RunUser;
  /** `host` (default; the host's resolv.conf and hosts bound in) or `none` (loopback only). */
  readonly network: 'host' | 'none';
  /** Hostname inside the UTS namespace (default: a short random id, as docker's build uses). */
  readonly hostname?: string;
  /** Live output; called with chunks as they arrive. */
  readonly onStdout?: (chunk: Buffer) => void;
  readonly onStderr?: (chunk: Buffer) => void;
  /** Aborting kills the step's whole process tree (runc kill + delete) and rejects with ABORTED. */
  readonly signal?: AbortSignal;
  /** Extra read-only bind mounts (`--mount=type=secret` later): host path → absolute path in the root. */
  readonly binds?: ReadonlyArray<{
    readonly source: string;
    readonly destination: string;
    readonly readonly: boolean;
  }>;
}

/** How a step ended. A non-zero exit is a result, not a throw: the executor turns it into a build error. */
export interface RunResult {
  readonly exitCode: number;
  /** The signal that killed the process, when one did (`SIGKILL`). */
  readonly signal?: string;
  /** The last lines of combined output (at most ~4 KiB), for the error message of a failed step. */
  readonly tail: string;
  /**
   * Set when the runtime itself failed to start the process (runc's own error, e.g. the executable is missing):
   * then `exitCode` is runc's (1), not the process's; `tail` holds the message too.
   */
  readonly runtimeError?: string;
}

/** Runs one step; throws StrataError (RUNTIME_UNAVAILABLE when runc is missing, ABORTED) only when it cannot run it. */
export type StepRunner = (spec: RunSpec) => Promise<RunResult>;
