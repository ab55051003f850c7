import { generate, generateUsage } from './commands/generate.js';
import { initModel, initModelUsage } from './commands/init-model.js';
import { plan, planUsage } from './commands/plan.js';
import { up, upUsage } from './commands/up.js';
import { serve, serveUsage } from './commands/serve.js';
import { shard, shardUsage } from './commands/shard.js';
import { UsageError } from './cli-error.js';
import { exitWithParent } from '@expertmesh/process-lifecycle';

const commands: Record<string, { run: (argv: readonly string[]) => Promise<number>; usage: string }> = {
  up: { run: up, usage: upUsage },
  'init-model': { run: initModel, usage: initModelUsage },
  generate: { run: generate, usage: generateUsage },
  shard: { run: shard, usage: shardUsage },
  serve: { run: serve, usage: serveUsage },
  plan: { run: plan, usage: planUsage },
};

const usage = `usage: expertmesh <command> [flags]\n\n${Object.values(commands)
  .map((c) => c.usage)
  .join('\n\n')}\n`;

/** Runs one CLI command; returns the process exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  // Started by `expertmesh up` (or another parent with an IPC channel): never outlive it.
  exitWithParent();
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage);
    return name ? 0 : 2;
  }
  const command = commands[name];
  if (!command) {
    process.stderr.write(`expertmesh: unknown command "${name}"\n\n${usage}`);
    return 2;
  }
  if (rest.includes('--help')) {
    process.stdout.write(`${command.usage}\n`);
    return 0;
  }
  try {
    return await command.run(rest);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`expertmesh ${name}: ${e.message}\n\n${command.usage}\n`);
      return 2;
    }
    const err = e as Error;
    process.stderr.write(`expertmesh ${name}: ${err.name}: ${err.message}\n`);
    return 1;
  }
}
