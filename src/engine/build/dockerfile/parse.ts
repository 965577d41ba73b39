import type { ArgInstruction, Dockerfile, FromInstruction, Instruction, Stage } from './types.js';
import { dockerfileError } from './errors.js';
import { acceptsHeredocs, parseInstruction } from './instructions.js';
import { scanLines } from './scan.js';

/**
 * Parses Dockerfile text into stages of instructions with arguments as written (variables not substituted; see
 * `expandInstruction`). Follows docker's parser: directives, comments, continuations, JSON vs shell form, heredocs.
 * Throws `TerminalError` DOCKERFILE_INVALID with a `Dockerfile:LINE: …` message and `detail.line` on any error.
 */
export function parseDockerfile(text: string): Dockerfile {
  const scanned = scanLines(text, acceptsHeredocs);
  if (scanned.lines.length === 0) {
    throw dockerfileError(Math.max(1, scanned.lineCount), 'file with no instructions');
  }
  const globalArgs: ArgInstruction[] = [];
  const stages: Stage[] = [];
  const stageLines = new Map<string, number>();
  let current: { from: FromInstruction; instructions: Instruction[] } | undefined;
  const close = (): void => {
    if (current)
      stages.push({ index: stages.length, from: current.from, instructions: current.instructions });
  };

  for (const line of scanned.lines) {
    const instr = parseInstruction({ ...line, escape: scanned.escape });
    if (instr.kind === 'FROM') {
      if (instr.stageName !== undefined) {
        const first = stageLines.get(instr.stageName);
        if (first !== undefined) {
          throw dockerfileError(
            instr.line,
            `duplicate stage name "${instr.stageName}" (first defined on line ${first})`,
          );
        }
        stageLines.set(instr.stageName, instr.line);
      }
      close();
      current = { from: instr, instructions: [] };
    } else if (current) {
      current.instructions.push(instr);
    } else if (instr.kind === 'ARG') {
      globalArgs.push(instr);
    } else {
      throw dockerfileError(
        instr.line,
        `${instr.kind} before the first FROM (only ARG may come before FROM)`,
      );
    }
  }
  close();
  if (stages.length === 0) {
    throw dockerfileError(scanned.lineCount, 'no FROM instruction: the Dockerfile has no build stage');
  }
  return { directives: scanned.directives, escape: scanned.escape, globalArgs, stages };
}
