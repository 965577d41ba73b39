/**
 * The Dockerfile as the parser hands it to the build: stages of instructions, each with its source lines and its
 * arguments as written (variables NOT yet substituted — the build expands them step by step with
 * `expandInstruction`, because ARG and ENV change what a later instruction sees). This file is the contract
 * between `dockerfile/` (parse, expand) and the build executor; change it only with both sides.
 */

/** Where an instruction is in the file: 1-based first and last line (a continued or heredoc instruction spans several). */
export interface SourceRange {
  readonly line: number;
  readonly endLine: number;
}

/** `--name=value` flags of an instruction (`--from`, `--chown`, `--chmod`, `--link`, `--platform`, `--mount`, …), in order. */
export interface InstructionFlag {
  readonly name: string;
  /** `undefined` for a bare boolean flag (`--link`). */
  readonly value?: string;
}

/** A heredoc body attached to RUN/COPY/ADD (`<<EOF` … `EOF`). */
export interface Heredoc {
  /** The delimiter word as written (quotes removed). */
  readonly name: string;
  /** The body, lines joined with `\n`, ending with `\n` as BuildKit does. */
  readonly content: string;
  /** Unquoted delimiter: the body gets variable expansion (in RUN, by the shell; in COPY, by the build). */
  readonly expand: boolean;
  /** `<<-`: leading tabs stripped. */
  readonly chomp: boolean;
}

/** The shell form (`RUN apt-get update`) or the exec/JSON form (`RUN ["apt-get", "update"]`). */
export type CommandForm =
  | { readonly form: 'shell'; readonly command: string }
  | { readonly form: 'exec'; readonly args: readonly string[] };

interface Base extends SourceRange {
  /** The instruction text as written, continuation lines joined (for errors, history `created_by` and cache keys). */
  readonly original: string;
  readonly flags: readonly InstructionFlag[];
}

export interface FromInstruction extends Base {
  readonly kind: 'FROM';
  /** `scratch`, an image reference, or a previous stage's name (decided by the build after expansion). */
  readonly image: string;
  /** `AS name`, lower-cased as docker does. */
  readonly stageName?: string;
}
/** `ARG name[=default]` — one entry per name (docker allows several per instruction). */
export interface ArgInstruction extends Base {
  readonly kind: 'ARG';
  readonly args: ReadonlyArray<{ readonly name: string; readonly default?: string }>;
}
/**
 * `ENV k=v …` or the legacy `ENV k v`; `LABEL k=v …`. Keys and values are as written, quotes included
 * (`B="two words"` gives the value `"two words"`): `expandInstruction` substitutes and removes the quotes, as docker does.
 */
export interface KeyValueInstruction extends Base {
  readonly kind: 'ENV' | 'LABEL';
  readonly pairs: ReadonlyArray<{ readonly key: string; readonly value: string }>;
}
export interface RunInstruction extends Base {
  readonly kind: 'RUN';
  readonly command: CommandForm;
  readonly heredocs: readonly Heredoc[];
}
/** CMD and ENTRYPOINT: the shell form is run by the image's SHELL at build time (`["/bin/sh","-c",command]`). */
export interface CommandInstruction extends Base {
  readonly kind: 'CMD' | 'ENTRYPOINT';
  readonly command: CommandForm;
}
export interface CopyInstruction extends Base {
  readonly kind: 'COPY' | 'ADD';
  /** Sources then destination, as written (JSON form or whitespace-split). */
  readonly sources: readonly string[];
  readonly destination: string;
  readonly heredocs: readonly Heredoc[];
}
/** Instructions with one string argument: WORKDIR, USER, STOPSIGNAL. */
export interface WordInstruction extends Base {
  readonly kind: 'WORKDIR' | 'USER' | 'STOPSIGNAL';
  readonly value: string;
}
/** EXPOSE and VOLUME: a list of words (VOLUME also in JSON form). */
export interface ListInstruction extends Base {
  readonly kind: 'EXPOSE' | 'VOLUME';
  readonly values: readonly string[];
}
/** `SHELL ["executable", "param"]` (JSON form only). */
export interface ShellInstruction extends Base {
  readonly kind: 'SHELL';
  readonly shell: readonly string[];
}
export interface HealthcheckInstruction extends Base {
  readonly kind: 'HEALTHCHECK';
  /** `NONE` disables the base image's check. */
  readonly test: { readonly none: true } | { readonly none: false; readonly command: CommandForm };
  // --interval, --timeout, --start-period, --start-interval (Go durations as written) and --retries are in `flags`.
}
/** `ONBUILD <instruction>`: recorded in the image config as the trigger text, run when the image is a base. */
export interface OnbuildInstruction extends Base {
  readonly kind: 'ONBUILD';
  /** The trigger as written after ONBUILD (what docker stores in `config.OnBuild`). */
  readonly trigger: string;
}
/** MAINTAINER (deprecated, sets `author`). */
export interface MaintainerInstruction extends Base {
  readonly kind: 'MAINTAINER';
  readonly value: string;
}

/** Every instruction a stage can hold after its FROM. */
export type Instruction =
  | ArgInstruction
  | KeyValueInstruction
  | RunInstruction
  | CommandInstruction
  | CopyInstruction
  | WordInstruction
  | ListInstruction
  | ShellInstruction
  | HealthcheckInstruction
  | OnbuildInstruction
  | MaintainerInstruction;

/** A build stage: its FROM and the instructions after it, in order. */
export interface Stage {
  /** 0-based position in the file (`COPY --from=0`). */
  readonly index: number;
  readonly from: FromInstruction;
  readonly instructions: readonly Instruction[];
}

/** A parsed Dockerfile. */
export interface Dockerfile {
  /** Parser directives (`# syntax=`, `# escape=`, `# check=`), names lower-cased. */
  readonly directives: Readonly<Record<string, string>>;
  /** The escape character in effect (`\` or `` ` ``). */
  readonly escape: '\\' | '`';
  /** ARGs before the first FROM (usable in FROM lines, and in a stage after re-declaring them). */
  readonly globalArgs: readonly ArgInstruction[];
  readonly stages: readonly Stage[];
}
