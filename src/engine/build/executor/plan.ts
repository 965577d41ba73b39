/**
 * Which stages a build runs: the target stage and, transitively, the stages it builds on (`FROM stage`) or copies
 * from (`COPY --from=stage`), in an order where every stage comes after those it needs. Stages the target does not
 * need are never built, as BuildKit does.
 */
import { StrataError, TerminalError } from '../../errors.js';
import type { Dockerfile, Stage } from '../dockerfile/types.js';

/** Where a stage's base or a `--from` points: another stage, or an image (or `scratch`). */
export type StageSource =
  { readonly kind: 'stage'; readonly index: number } | { readonly kind: 'image'; readonly ref: string };

/** Resolves a name (`FROM x`, `--from=x`) against the stages declared before `before` (a `--from` may use an index). */
export function resolveStageName(
  file: Dockerfile,
  name: string,
  before: number,
  allowIndex: boolean,
): StageSource {
  const lower = name.toLowerCase();
  for (let i = before - 1; i >= 0; i--)
    if (file.stages[i]!.from.stageName === lower) return { kind: 'stage', index: i };
  if (allowIndex && /^\d+$/.test(name)) {
    const index = Number(name);
    if (index >= before)
      throw new TerminalError(
        'DOCKERFILE_INVALID',
        `--from=${name}: stage ${index} is not defined before this one`,
        {
          detail: { stage: index },
        },
      );
    return { kind: 'stage', index };
  }
  return { kind: 'image', ref: name };
}

/** The stage a `--target` names (default: the last one); DOCKERFILE_INVALID naming the stages when unknown. */
export function targetStage(file: Dockerfile, target?: string): Stage {
  if (target === undefined || target === '') return file.stages.at(-1)!;
  const found = file.stages.find((s) => s.from.stageName === target.toLowerCase());
  if (!found) {
    const names = file.stages.map((s) => s.from.stageName).filter((n): n is string => n !== undefined);
    throw new TerminalError(
      'DOCKERFILE_INVALID',
      `target stage ${JSON.stringify(target)} could not be found${names.length ? ` (stages: ${names.join(', ')})` : ' (no stage has a name)'}`,
    );
  }
  return found;
}

/**
 * The stages to build for `target`, dependencies first. `expand` turns a FROM image or `--from` value into its
 * final text (global build args substituted).
 */
export function stagesToBuild(file: Dockerfile, target: Stage, expand: (word: string) => string): number[] {
  const order: number[] = [];
  const seen = new Set<number>();
  const visit = (index: number): void => {
    if (seen.has(index)) return;
    seen.add(index);
    for (const dep of stageDependencies(file, index, expand)) visit(dep);
    order.push(index);
  };
  visit(target.index);
  return order;
}

/** The stages a stage needs: its FROM, if a stage, and every `COPY/ADD --from` naming a stage. */
export function stageDependencies(
  file: Dockerfile,
  index: number,
  expand: (word: string) => string,
): number[] {
  const stage = file.stages[index]!;
  const deps: number[] = [];
  const base = atLine(stage.from.line, () => resolveStageName(file, expand(stage.from.image), index, false));
  if (base.kind === 'stage') deps.push(base.index);
  for (const instr of stage.instructions) {
    if (instr.kind !== 'COPY' && instr.kind !== 'ADD') continue;
    const from = instr.flags.find((f) => f.name === 'from')?.value;
    if (from === undefined) continue;
    const src = atLine(instr.line, () => resolveStageName(file, expand(from), index, true));
    if (src.kind === 'stage') deps.push(src.index);
  }
  return deps;
}

/** Runs `f`; an error it throws is prefixed with `Dockerfile:<line>:` (code and cause kept). */
function atLine<T>(line: number, f: () => T): T {
  try {
    return f();
  } catch (err) {
    if (!(err instanceof StrataError) || err.message.startsWith('Dockerfile:')) throw err;
    throw new TerminalError(err.code, `Dockerfile:${line}: ${err.message}`, {
      cause: err,
      detail: { ...err.detail, line },
    });
  }
}
