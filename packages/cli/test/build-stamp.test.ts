import { mkdir, readFile, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BUILD_INFO_FILE, chooseRuntime, firstStaleInput, makeStamp, readStamp } from '../scripts/build-stamp.mjs';
import { tempDir } from '../../../test/helpers/temp-dir.js';

/** The rule `expertmesh` runs compiled code by: only a build made from the sources as they are now. */
describe('the compiled build stamp', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let build: string;
  beforeEach(async () => {
    dir = await tempDir('stamp');
    build = join(dir.path, 'dist');
    await mkdir(join(dir.path, 'src'), { recursive: true });
    await mkdir(build);
    await writeFile(join(dir.path, 'src', 'a.ts'), 'export const a = 1;\n');
    await writeFile(join(dir.path, 'src', 'b.ts'), 'export const b = 2;\n');
    await writeFile(join(build, BUILD_INFO_FILE), JSON.stringify(makeStamp(dir.path, build, ['src/a.ts', 'src/b.ts'])));
  });
  afterEach(async () => dir.remove());

  it('records the install root relative to the build, and every input', () => {
    const stamp = readStamp(build)!;
    expect(stamp.root).toBe('..');
    expect(Object.keys(stamp.files)).toEqual(['src/a.ts', 'src/b.ts']);
    expect(firstStaleInput(stamp, build)).toBeNull();
  });

  it('auto runs the build while it matches the sources, also after a checkout that rewrote a file with the same bytes', async () => {
    expect(chooseRuntime(undefined, build)).toEqual({ runtime: 'compiled' });
    const later = new Date(Date.now() + 60_000);
    await utimes(join(dir.path, 'src', 'a.ts'), later, later);
    expect(chooseRuntime('auto', build)).toEqual({ runtime: 'compiled' });
  });

  it('an edited, resized or removed source makes the build stale: auto runs the sources and says why', async () => {
    // Same size, new bytes, new time: only the hash tells.
    await writeFile(join(dir.path, 'src', 'b.ts'), 'export const b = 3;\n');
    const choice = chooseRuntime(undefined, build);
    expect(choice).toMatchObject({ runtime: 'sources' });
    expect('note' in choice && choice.note).toMatch(/src\/b\.ts changed.*npm run build/);
    await writeFile(join(dir.path, 'src', 'b.ts'), 'export const b = 2;\n'); // back as built
    expect(chooseRuntime(undefined, build)).toEqual({ runtime: 'compiled' });
    await writeFile(join(dir.path, 'src', 'a.ts'), 'export const a = 10;\n');
    expect(firstStaleInput(readStamp(build), build)).toBe('src/a.ts');
    await writeFile(join(dir.path, 'src', 'a.ts'), 'export const a = 1;\n');
    await import('node:fs/promises').then((fs) => fs.rm(join(dir.path, 'src', 'b.ts')));
    expect(firstStaleInput(readStamp(build), build)).toBe('src/b.ts');
  });

  it('compiled refuses a missing or stale build instead of falling back; sources never reads the build', async () => {
    expect(chooseRuntime('compiled', join(dir.path, 'nowhere'))).toEqual({ error: expect.stringMatching(/no build in .*npm run build/) });
    await writeFile(join(dir.path, 'src', 'a.ts'), '// edited\n');
    expect(chooseRuntime('compiled', build)).toEqual({ error: expect.stringMatching(/older than the sources \(src\/a\.ts changed\)/) });
    expect(chooseRuntime('sources', build)).toEqual({ runtime: 'sources' });
    expect(chooseRuntime(undefined, join(dir.path, 'nowhere'))).toEqual({ runtime: 'sources' });
  });

  it('a stamp of another layout is stale, and a bad setting is refused', async () => {
    const stamp = JSON.parse(await readFile(join(build, BUILD_INFO_FILE), 'utf8')) as { layout: number };
    await writeFile(join(build, BUILD_INFO_FILE), JSON.stringify({ ...stamp, layout: stamp.layout + 1 }));
    expect(chooseRuntime(undefined, build)).toMatchObject({ runtime: 'sources', note: expect.stringMatching(/another layout/) });
    expect(chooseRuntime('tsx', build)).toEqual({ error: expect.stringMatching(/auto, compiled or sources, not "tsx"/) });
  });
});
