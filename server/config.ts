// Loads config.toml into one validated, frozen Config. Every problem is reported at once; the CLI turns a
// ConfigError into exit code 2.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse as parseToml, stringify as stringifyToml, TomlError } from 'smol-toml';
import { configSchema, DEFAULTS, NOT_YET_ACTIVE, type Config, type ConfigKey } from './config-schema.js';

export type { Config } from './config-schema.js';

export class ConfigError extends Error {
  readonly problems: readonly string[];
  constructor(problems: readonly string[]) {
    super(problems.join('\n'));
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

export interface LoadedConfig {
  config: Config;
  warnings: string[];
}

/** The Secret of the shipped config.toml: fine for a first run on loopback, never for production. */
export const EXAMPLE_SECRET = 'change-me-to-a-long-random-secret';

const PATH_KEYS = ['StoreDir', 'LogFile', 'UnixSocketPath'] as const satisfies readonly ConfigKey[];

function show(value: unknown): string {
  return JSON.stringify(value) ?? String(value);
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}

/**
 * Validates a parsed TOML table. Relative paths are resolved against baseDir (the config file's folder),
 * so a service manager's working directory does not change where files go.
 */
export function buildConfig(raw: Record<string, unknown>, baseDir: string): LoadedConfig {
  const warnings: string[] = [];
  const known: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(raw)) {
    if (Object.hasOwn(DEFAULTS, key)) known[key] = value;
    else warnings.push(`unknown key ${key} (ignored)`);
  }
  const result = configSchema.safeParse({ ...DEFAULTS, ...known });
  if (!result.success) {
    const problems = result.error.issues.map((issue) => {
      const key = String(issue.path[0] ?? '(root)');
      const value = issue.path.reduce<unknown>((v, p) => (v as Record<PropertyKey, unknown> | undefined)?.[p], { ...DEFAULTS, ...known });
      const where = key + issue.path.slice(1).map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('');
      return `${where} = ${show(value)}: expected ${issue.message}`;
    });
    throw new ConfigError(problems);
  }
  const config = { ...result.data };
  for (const key of PATH_KEYS) {
    if (config[key] !== '') config[key] = path.resolve(baseDir, config[key]);
  }
  for (const [key, active] of NOT_YET_ACTIVE) {
    if (active(config)) warnings.push(`${key} = ${show(raw[key] ?? DEFAULTS[key])}: this feature is not yet active in this version and is ignored`);
  }
  if (config.Secret === EXAMPLE_SECRET) warnings.push('Secret is the example value from the shipped config.toml: set your own before exposing the server');
  return { config: deepFreeze(config), warnings };
}

export function parseConfigText(text: string, baseDir: string, source = 'config.toml'): LoadedConfig {
  let raw: Record<string, unknown>;
  try {
    raw = parseToml(text);
  } catch (err) {
    const detail = err instanceof TomlError ? `line ${err.line}, column ${err.column}: ${err.message.split('\n')[0]}` : String(err);
    throw new ConfigError([`${source} is not valid TOML (${detail})`]);
  }
  return buildConfig(raw, baseDir);
}

export function loadConfig(file: string): LoadedConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError([`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`]);
  }
  return parseConfigText(text, path.dirname(path.resolve(file)), file);
}

/** Every key with its default, as TOML. */
export function defaultConfigToml(): string {
  return stringifyToml(DEFAULTS);
}
