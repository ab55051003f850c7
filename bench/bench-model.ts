import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { makeCheckpoint } from '@expertmesh/checkpoint-maker';

/** The `bench` preset checkpoint, made on first use under .tmp/ (never committed). */
export async function ensureBenchModel(dir = join(process.cwd(), '.tmp', 'models', 'bench')): Promise<string> {
  if (!existsSync(join(dir, 'config.json'))) {
    console.error(`making the bench checkpoint in ${dir} …`);
    await makeCheckpoint({ preset: 'bench', outDir: dir, dtype: 'bfloat16', seed: 0 });
  }
  return dir;
}
