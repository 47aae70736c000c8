// Loads config.toml into one validated, frozen Config. Every problem is reported at once; the CLI turns a
// ConfigError into exit code 2.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse as parseToml, stringify as stringifyToml, TomlError } from 'smol-toml';
import { addressMatcher } from './address-list.js';
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

const PATH_KEYS = ['StoreDir', 'LogFile', 'AuditLogFile', 'UnixSocketPath', 'CertDir', 'ACMECAFile'] as const satisfies readonly ConfigKey[];

/** Addresses only this machine can reach: there a guessable secret opens nothing to the network. */
const isLoopback = addressMatcher(['127.0.0.0/8', '::1/128']);

/** Plain words for the read errors an operator meets, after the code they would search for. */
const READ_ERRORS: Readonly<Record<string, string>> = { ENOENT: 'no such file', EACCES: 'permission denied', EISDIR: 'a folder, not a file' };

type Issue = { readonly path: readonly PropertyKey[]; readonly message: string };

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

/** Levenshtein distance: enough to catch the dropped, doubled or swapped letter of a misspelt key. */
function editDistance(a: string, b: string): number {
  let above = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(above[j]! + 1, row[j - 1]! + 1, above[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    above = row;
  }
  return above[b.length]!;
}

/** The known key an unknown one most likely meant: equal ignoring case, or at most two edits away. */
function closestKey(unknown: string): string | undefined {
  let best: { key: string; distance: number } | undefined;
  for (const key of Object.keys(DEFAULTS)) {
    const distance = editDistance(unknown.toLowerCase(), key.toLowerCase());
    if (distance <= 2 && (best === undefined || distance < best.distance)) best = { key, distance };
  }
  return best?.key;
}

function unknownKeyMessage(key: string): string {
  const meant = closestKey(key);
  return `unknown key ${key} (ignored)${meant === undefined ? '' : `: did you mean ${meant}?`}`;
}

/** Splits the table into schema keys and messages for the rest, which are reported rather than guessed at. */
function splitKeys(raw: Record<string, unknown>): { known: Record<string, unknown>; unknown: string[] } {
  const known: Record<string, unknown> = {};
  const unknown: string[] = [];
  for (const [key, value] of Object.entries(raw)) {
    if (Object.hasOwn(DEFAULTS, key)) known[key] = value;
    else unknown.push(unknownKeyMessage(key));
  }
  return { known, unknown };
}

function describeIssue(issue: Issue, input: Record<string, unknown>): string {
  const key = String(issue.path[0] ?? '(root)');
  const value = issue.path.reduce<unknown>((v, p) => (v as Record<PropertyKey, unknown> | undefined)?.[p], input);
  const where = key + issue.path.slice(1).map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('');
  return `${where} = ${show(value)}: expected ${issue.message}`;
}

/** A unix socket counts as exposed: whatever proxies it (nginx) is usually reachable from outside. */
function listensOnLoopbackOnly(config: Config): boolean {
  return !config.UnixSocket && isLoopback(config.ListenIP);
}

/** Every key holding the example secret, named as the problems name them (Tenants[0].PreviousSecrets[1]). */
function exampleSecretKeys(config: Config): string[] {
  const keys: string[] = [];
  const look = (where: string, secret: string, previous: readonly string[]) => {
    if (secret === EXAMPLE_SECRET) keys.push(`${where}Secret`);
    previous.forEach((s, i) => {
      if (s === EXAMPLE_SECRET) keys.push(`${where}PreviousSecrets[${i}]`);
    });
  };
  look('', config.Secret, config.PreviousSecrets);
  config.Tenants.forEach((t, i) => look(`Tenants[${i}].`, t.Secret, t.PreviousSecrets));
  return keys;
}

function refuseExampleSecret(key: string): string {
  return (
    `${key} = ${show(EXAMPLE_SECRET)}: the example secret from the shipped config.toml is accepted only when listening on loopback ` +
    '(ListenIP 127.0.0.1 or ::1, UnixSocket = false); set your own (openssl rand -hex 32)'
  );
}

function warnExampleSecret(key: string): string {
  return `${key} is the example value from the shipped config.toml: set your own before exposing the server`;
}

/**
 * Validates a parsed TOML table. Relative paths are resolved against baseDir (the config file's folder),
 * so a service manager's working directory does not change where files go. Unknown keys only warn on their
 * own, but join the problems when there are any: a misspelt key is often why a value is missing.
 */
export function buildConfig(raw: Record<string, unknown>, baseDir: string): LoadedConfig {
  const { known, unknown } = splitKeys(raw);
  const input = { ...DEFAULTS, ...known };
  const result = configSchema.safeParse(input);
  if (!result.success) throw new ConfigError([...result.error.issues.map((issue) => describeIssue(issue, input)), ...unknown]);
  const config = { ...result.data };
  for (const key of PATH_KEYS) {
    if (config[key] !== '') config[key] = path.resolve(baseDir, config[key]);
  }
  const example = exampleSecretKeys(config);
  if (example.length > 0 && !listensOnLoopbackOnly(config)) throw new ConfigError([...example.map(refuseExampleSecret), ...unknown]);
  const warnings = [...unknown];
  for (const [key, active] of NOT_YET_ACTIVE) {
    if (active(config)) warnings.push(`${key} = ${show(raw[key] ?? DEFAULTS[key])}: this feature is not yet active in this version and is ignored`);
  }
  warnings.push(...example.map(warnExampleSecret));
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

function describeReadError(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === undefined) return String(err);
  return READ_ERRORS[code] === undefined ? code : `${code} (${READ_ERRORS[code]})`;
}

/** Errors name the absolute path, since the file tried depends on a working directory nobody sees. */
export function loadConfig(file: string): LoadedConfig {
  const absolute = path.resolve(file);
  let text: string;
  try {
    text = readFileSync(absolute, 'utf8');
  } catch (err) {
    throw new ConfigError([`cannot read ${absolute}: ${describeReadError(err)}`]);
  }
  return parseConfigText(text, path.dirname(absolute), file);
}

/** Every key with its default, as TOML. */
export function defaultConfigToml(): string {
  return stringifyToml(DEFAULTS);
}
