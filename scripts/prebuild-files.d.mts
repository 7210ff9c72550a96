// Types for prebuild-files.mjs (imported by the install test).
export function addonName(platform?: NodeJS.Platform): string;
export function copyPrebuild(releaseDir: string, destDir: string, options?: { strip?: boolean }): Array<{ name: string; bytes: number }>;
