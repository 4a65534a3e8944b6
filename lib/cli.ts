#!/usr/bin/env node
// The `rlora` command: `rlora <subcommand> [options]`.
//
// This file is the entry point and the command table; each subcommand lives in lib/cli/<name>.ts.
// Adding a subcommand: one file there and one entry in `commands` below. A subcommand imports what
// loads the addon (models, the library) inside its run(), not at the top of its file: `rlora build`
// and `rlora doctor` must work when the addon cannot be loaded.
import { closest, InputError, Subcommand, UsageError } from './cli/args';
import { buildCommand } from './cli/build';
import { doctorCommand, version } from './cli/doctor';
import { downloadCommand } from './cli/download';
import { evalCommand } from './cli/eval';
import { exportCommand } from './cli/export';
import { generateCommand } from './cli/generate';
import { inspect } from './cli/inspect';
import { mergeCommand } from './cli/merge';
import { plot } from './cli/plot';
import { serveCommand } from './cli/serve';
import { sweepCommand } from './cli/sweep';
import { train } from './cli/train';
import { RloraLoadError } from './loader';
import { printable } from './util/printable';

export { InputError, parseArgs, UsageError } from './cli/args';
export type { Subcommand } from './cli/args';
export { BUILD_PACKAGES_INSTALL } from './cli/build';

export const commands: Record<string, Subcommand> = { train, eval: evalCommand, generate: generateCommand, merge: mergeCommand, export: exportCommand, serve: serveCommand, sweep: sweepCommand, inspect, plot, download: downloadCommand, build: buildCommand, doctor: doctorCommand };

function usage(): string {
  const width = Math.max(...Object.keys(commands).map((k) => k.length));
  return [
    `rlora ${version()}: R-LoRA multi-head LoRA fine-tuning for Node.js, computed by libtorch`,
    '',
    'Usage: rlora <command> [options]',
    '',
    'Commands:',
    ...Object.entries(commands).map(([k, c]) => `  ${k.padEnd(width)}  ${c.summary}`),
    '',
    '`rlora <command> --help` shows a command\'s options.',
  ].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...args] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    const topic = name === 'help' ? args[0] : undefined;
    if (topic && commands[topic]) console.log(commands[topic].help);
    else if (topic) {
      const near = closest(topic, Object.keys(commands), 2);
      console.error(`rlora help: unknown command ${topic}${near ? `; did you mean ${near}?` : ''}\n\n${usage()}`);
      return 2;
    } else console.log(usage());
    return 0;
  }
  if (name === '--version' || name === '-v') {
    console.log(version());
    return 0;
  }
  const cmd = commands[name];
  if (!cmd) {
    const near = closest(name, [...Object.keys(commands), 'help'], 2);
    if (near) console.error(`rlora: unknown command ${name}; did you mean ${near}?\n\n\`rlora --help\` lists the commands.`);
    else console.error(`rlora: unknown command ${JSON.stringify(name)}\n\n${usage()}`);
    return 2;
  }
  if (args.includes('--help') || args.includes('-h')) {
    console.log(cmd.help);
    return 0;
  }
  try {
    return await cmd.run(args);
  } catch (e) {
    if (e instanceof UsageError) {
      // the usage lines (the help up to its first blank line), not the whole help
      const synopsis = cmd.help.split(/\n\s*\n/)[0];
      console.error(`rlora ${name}: ${printable(e.message)}\n\n${synopsis}\n\n\`rlora ${name} --help\` shows every option.`);
      return 2;
    }
    if (e instanceof InputError) {
      console.error(`rlora ${name}: ${printable(e.message)}`);
      return 1;
    }
    if (e instanceof RloraLoadError) {
      console.error(e.message);
      return 1;
    }
    throw e;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e) => {
      console.error(e instanceof Error ? printable(e.stack ?? e.message) : e);
      process.exitCode = 1;
    },
  );
}
