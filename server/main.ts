#!/usr/bin/env node
// The command line and composition root: parses arguments, loads config.toml, builds the logger and
// starts the server; also the `sign`, `grant` and `upload` helpers. Exit codes: 0 ok, 1 runtime failure (an
// upload that failed), 2 configuration or usage.
import type { RunningServer } from './run.js';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { defaultBaseUrl, signedUrls } from './cli-sign.js';
import { ConfigError, defaultConfigToml, loadConfig, type LoadedConfig } from './config.js';
import { HttpError } from './errors.js';
import { createLogger, reopenLogFile } from './logger.js';
import { parseDuration, parseSize } from './units.js';
import { ADMIN_USAGE, isAdminCommand } from './cli-admin.js';

const USAGE = `Usage:
  hmac-file-server [--config PATH]              start the server (default ./config.toml)
  hmac-file-server --validate-config [--config PATH]
  hmac-file-server --print-default-config
  hmac-file-server sign --path UUID/NAME --size N [--type TYPE] [--protocol v|v2|token]
                        [--base-url URL] [--config PATH]
  hmac-file-server grant --subject S --max-size SIZE --ttl DURATION [--filename NAME] [--prefix PATH]
                         [--config PATH]
  hmac-file-server upload FILE... (--url TUS_URL --grant GRANT | --config PATH [--subject S] [--url TUS_URL])
                          [--parallel N] [--chunk-size SIZE] [--json] [--state-file PATH]
${ADMIN_USAGE}
`;

class UsageError extends Error {}

function readConfig(file: string): LoadedConfig {
  const loaded = loadConfig(file);
  for (const warning of loaded.warnings) process.stderr.write(`config: warning: ${warning}\n`);
  return loaded;
}

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

function sign(args: string[]): void {
  const { values } = parseArgs({
    args,
    options: {
      config: { type: 'string', default: 'config.toml' },
      path: { type: 'string' },
      size: { type: 'string' },
      type: { type: 'string', default: 'application/octet-stream' },
      protocol: { type: 'string', default: 'v2' },
      'base-url': { type: 'string' },
    },
  });
  const size = values.size === undefined ? undefined : parseSize(values.size);
  if (!values.path || size === undefined) throw new UsageError('sign needs --path and --size');
  const protocol = values.protocol;
  if (protocol !== 'v' && protocol !== 'v2' && protocol !== 'token') throw new UsageError('--protocol is one of v, v2, token');
  const { config } = readConfig(values.config);
  const urls = signedUrls(config.Secret, values['base-url'] ?? defaultBaseUrl(config), {
    path: values.path,
    size,
    contentType: values.type,
    protocol,
  });
  process.stdout.write(`PUT ${urls.put}\nGET ${urls.get}\nVERSIONS ${urls.versions}\n`);
  const typeHint = protocol === 'v' ? '' : ` -H 'Content-Type: ${values.type}'`;
  process.stderr.write(`try: curl -T FILE${typeHint} '${urls.put}'   (FILE must be exactly ${size} bytes)\n`);
}

async function grant(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      config: { type: 'string', default: 'config.toml' },
      subject: { type: 'string' },
      'max-size': { type: 'string' },
      ttl: { type: 'string', default: '1h' },
      filename: { type: 'string' },
      prefix: { type: 'string' },
    },
  });
  const maxSize = values['max-size'] === undefined ? undefined : parseSize(values['max-size']);
  const ttl = parseDuration(values.ttl);
  if (!values.subject || maxSize === undefined || ttl === undefined) throw new UsageError('grant needs --subject, --max-size (e.g. 1GB) and --ttl (e.g. 1h)');
  if (maxSize < 1) throw new UsageError('--max-size must be at least 1 byte');
  const { config } = readConfig(values.config);
  const { grantKey, mintGrant } = await import('../middleware/upload-grant.js');
  const token = await mintGrant(grantKey(config.GrantSecret, config.Secret), {
    subject: values.subject,
    maxSize,
    ttlSeconds: Math.max(1, Math.round(ttl / 1000)),
    ...(values.filename !== undefined ? { filename: values.filename } : {}),
    ...(values.prefix !== undefined ? { prefix: values.prefix } : {}),
  });
  process.stdout.write(`${token}\n`);
}

/** The tus endpoint of a configured server: PublicURL, else its own listener. */
function tusEndpointOf(config: LoadedConfig['config']): string {
  if (config.PublicURL !== '') return `${config.PublicURL}${config.TusPath}`;
  return new URL(config.TusPath, defaultBaseUrl(config)).toString();
}

async function upload(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      url: { type: 'string' },
      grant: { type: 'string' },
      config: { type: 'string' },
      subject: { type: 'string', default: 'cli' },
      parallel: { type: 'string', default: '1' },
      'chunk-size': { type: 'string' },
      json: { type: 'boolean', default: false },
      'state-file': { type: 'string' },
    },
  });
  if (positionals.length === 0) throw new UsageError('upload needs at least one FILE');
  const parallel = Number(values.parallel);
  if (!Number.isInteger(parallel) || parallel < 1 || parallel > 64) throw new UsageError('--parallel is a whole number from 1 to 64');
  const chunkSize = values['chunk-size'] === undefined ? Infinity : parseSize(values['chunk-size']);
  if (chunkSize === undefined || chunkSize < 1) throw new UsageError('--chunk-size is a size such as 8MiB');
  const config = values.config === undefined ? undefined : readConfig(values.config).config;
  let token = values.grant;
  if (token === undefined) {
    if (config === undefined) throw new UsageError('upload needs --grant, or --config to make one with GrantSecret');
    // A grant made here for this run: the server's own secret, its size limit, a day to finish or resume in.
    const { grantKey, mintGrant } = await import('../middleware/upload-grant.js');
    token = await mintGrant(grantKey(config.GrantSecret, config.Secret), { subject: values.subject, maxSize: config.MaxUploadSize, ttlSeconds: 86_400 });
  }
  const url = values.url ?? (config ? tusEndpointOf(config) : undefined);
  if (url === undefined) throw new UsageError('upload needs --url (the tus endpoint, e.g. https://files.example.org/files/)');
  const { runUploads, defaultStateFile } = await import('./cli-upload.js');
  return runUploads({
    url,
    grant: token,
    files: positionals,
    json: values.json,
    parallel,
    chunkSize,
    stateFile: values['state-file'] ?? defaultStateFile(),
    stdout: process.stdout,
    stderr: process.stderr,
  });
}

/** The operators' port of the server that config describes, as a URL. */
function operatorsUrlOf(config: LoadedConfig['config']): string {
  const host = config.ListenIPMetrics.includes(':') ? `[${config.ListenIPMetrics}]` : config.ListenIPMetrics;
  return `http://${host === '0.0.0.0' ? '127.0.0.1' : host === '[::]' ? '[::1]' : host}:${config.MetricsPort}`;
}

async function admin(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  if (!isAdminCommand(command)) throw new UsageError('admin needs a command: files, usage, delete, delete-user, recount or health');
  const { values } = parseArgs({
    args: rest,
    options: {
      config: { type: 'string', default: 'config.toml' },
      url: { type: 'string' },
      token: { type: 'string' },
      json: { type: 'boolean', default: false },
      tenant: { type: 'string' },
      user: { type: 'string' },
      path: { type: 'string' },
      since: { type: 'string' },
      until: { type: 'string' },
      'min-size': { type: 'string' },
      'max-size': { type: 'string' },
      limit: { type: 'string' },
      offset: { type: 'string' },
    },
  });
  if (command === 'delete' && (!values.tenant || !values.path)) throw new UsageError('admin delete needs --tenant and --path');
  if (command === 'delete-user' && !values.user) throw new UsageError('admin delete-user needs --user');
  const sizeOf = (name: 'min-size' | 'max-size') => {
    if (values[name] === undefined) return undefined;
    const bytes = parseSize(values[name]);
    if (bytes === undefined) throw new UsageError(`--${name} is a size such as 10MiB`);
    return String(bytes);
  };
  const params = { tenant: values.tenant, user: values.user, path: values.path, since: values.since, until: values.until, min_size: sizeOf('min-size'), max_size: sizeOf('max-size'), limit: values.limit, offset: values.offset };
  // The URL and the token from config.toml unless given.
  const config = values.url !== undefined && values.token !== undefined ? undefined : readConfig(values.config).config;
  const token = values.token ?? config?.AdminToken ?? '';
  if (token === '') throw new UsageError('admin needs AdminToken in config.toml (or --token)');
  const { runAdmin } = await import('./cli-admin.js');
  return runAdmin(command!, params, { base: values.url ?? operatorsUrlOf(config!), token, json: values.json, stdout: process.stdout, stderr: process.stderr });
}

async function serve(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      config: { type: 'string', default: 'config.toml' },
      'validate-config': { type: 'boolean', default: false },
      'print-default-config': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
      version: { type: 'boolean', default: false },
    },
  });
  if (values.help) return void process.stdout.write(USAGE);
  if (values.version) return void process.stdout.write(`${version()}\n`);
  if (values['print-default-config']) return void process.stdout.write(defaultConfigToml());
  const { config } = readConfig(values.config);
  if (values['validate-config']) return void process.stdout.write(`${values.config}: OK\n`);

  const logger = createLogger(config);
  // SIGHUP: re-read the IP lists now (logrotate and operators send it after editing config.toml), and open
  // LogFile again by name (logrotate renamed it). Heard from here on: unheard, SIGHUP ends the process, and
  // a start can take seconds (Redis, ACME); one that comes meanwhile is acted on once the server runs.
  let running: RunningServer | undefined = undefined;
  let reloadWhenStarted = false;
  const reload = () => {
    reopenLogFile(logger);
    if (!running) return void (reloadWhenStarted = true);
    try {
      running.audit?.reopen();
      if (running.audit) logger.info('audit.reopened', { file: config.AuditLogFile });
    } catch (err) {
      logger.error('audit.reopen_failed', { file: config.AuditLogFile, cause: (err as NodeJS.ErrnoException).code ?? String(err) });
    }
    void running.guards.reloadLists();
    // EnableTLS: read the certificates again (certbot's deploy hook can send SIGHUP after a renewal).
    void running.tls?.reload();
  };
  process.on('SIGHUP', reload);
  // Imported here, so that --version, --validate-config, sign and grant do not load the whole server.
  const { startServer } = await import('./run.js');
  const server = await startServer(config, logger, { configFile: values.config });
  running = server;
  if (reloadWhenStarted) reload();
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info('server.stopping', { signal, graceMs: config.GracefulShutdownTimeout });
    void server.close(config.GracefulShutdownTimeout).then(() => {
      logger.info('server.stopped');
      logger.on('finish', () => process.exit(0));
      logger.end();
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

async function main(argv: string[]): Promise<void> {
  try {
    if (argv[0] === 'sign') sign(argv.slice(1));
    else if (argv[0] === 'grant') await grant(argv.slice(1));
    else if (argv[0] === 'upload') process.exitCode = await upload(argv.slice(1));
    else if (argv[0] === 'admin') process.exitCode = await admin(argv.slice(1));
    else await serve(argv);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`config: error: ${err.problems.join('\nconfig: error: ')}\n`);
      process.exit(2);
    }
    if (err instanceof UsageError || err instanceof HttpError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`${(err as Error).message}\n\n${USAGE}`);
      process.exit(2);
    }
    process.stderr.write(`hmac-file-server: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  }
}

await main(process.argv.slice(2));
