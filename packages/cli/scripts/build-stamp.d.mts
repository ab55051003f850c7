export declare const BUILD_INFO_FILE: string;
export declare const BUILD_LAYOUT: number;
export declare const RUNTIME_SWITCH: string;
export interface StampedFile {
  readonly size: number;
  readonly mtimeMs: number;
  readonly sha256: string;
}
export interface BuildStamp {
  readonly layout: number;
  readonly root: string;
  readonly node: string;
  readonly builtAt: string;
  readonly files: Readonly<Record<string, StampedFile>>;
}
export declare function makeStamp(root: string, buildDir: string, inputs: Iterable<string>): BuildStamp;
export declare function readStamp(buildDir: string): BuildStamp | null;
export declare function firstStaleInput(stamp: BuildStamp | null, buildDir: string): string | null;
export type RuntimeChoice = { readonly runtime: 'compiled' | 'sources'; readonly note?: string } | { readonly error: string };
export declare function chooseRuntime(setting: string | undefined, buildDir: string): RuntimeChoice;
