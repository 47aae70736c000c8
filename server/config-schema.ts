// The configuration schema: every key of config.toml with its type, default and expected form.
// Key names are the seed's (PascalCase, flat); DEFAULTS is written in the same form a user writes.
import net from 'node:net';
import { z } from 'zod';
import { parseDuration, parseSize } from './units.js';

const DURATION_FORM = 'a duration such as 30s, 1m, 24h, 30d or 168h0m0s (a bare number is seconds)';
const SIZE_FORM = 'a size in bytes such as 104857600, 100MB or 1GiB';

const bool = () => z.boolean({ error: 'true or false' });
const text = () => z.string({ error: 'a string' });
const count = (min = 0) => z.number({ error: `an integer >= ${min}` }).int({ error: `an integer >= ${min}` }).min(min, { error: `an integer >= ${min}` });

const port = () =>
  z.union([z.string(), z.number()], { error: 'a port number 0-65535' }).transform((value, ctx) => {
    const n = typeof value === 'number' ? value : /^\d+$/.test(value.trim()) ? Number(value) : NaN;
    if (!Number.isInteger(n) || n < 0 || n > 65535) {
      ctx.addIssue({ code: 'custom', message: 'a port number 0-65535' });
      return z.NEVER;
    }
    return n;
  });

/** Milliseconds. "0" or "" turns a duration off where that makes sense (FileTTL). */
const duration = () =>
  z.union([z.string(), z.number()], { error: DURATION_FORM }).transform((value, ctx) => {
    if (typeof value === 'number' && Number.isFinite(value) && value >= 0) return Math.round(value * 1000);
    if (typeof value === 'string' && (value.trim() === '' || value.trim() === '0')) return 0;
    const ms = typeof value === 'string' ? parseDuration(value) : undefined;
    if (ms === undefined) {
      ctx.addIssue({ code: 'custom', message: DURATION_FORM });
      return z.NEVER;
    }
    return ms;
  });

const size = () =>
  z.union([z.string(), z.number()], { error: SIZE_FORM }).transform((value, ctx) => {
    const bytes = typeof value === 'number' ? value : parseSize(value);
    if (bytes === undefined || !Number.isSafeInteger(bytes) || bytes < 0) {
      ctx.addIssue({ code: 'custom', message: SIZE_FORM });
      return z.NEVER;
    }
    return bytes;
  });

const ipLiteral = () => text().refine((v) => net.isIP(v) !== 0, { error: 'an IPv4 or IPv6 address literal' });

function isCidr(value: string): boolean {
  const [address, prefix, ...rest] = value.split('/');
  const family = net.isIP(address ?? '');
  if (family === 0 || rest.length > 0) return false;
  if (prefix === undefined) return true;
  const bits = /^\d+$/.test(prefix) ? Number(prefix) : -1;
  return bits >= 0 && bits <= (family === 4 ? 32 : 128);
}
const cidrList = () =>
  z.array(text().refine(isCidr, { error: 'a CIDR such as 10.0.0.0/8 or ::1/128' }), {
    error: 'a list of CIDRs such as ["127.0.0.1/8", "::1/128"]',
  });

/** A file extension list, normalised to lower case with a leading dot. */
const extensions = () =>
  z
    .array(text().regex(/^\.?[^./\\\0][^/\\\0]*$/, { error: 'an extension such as ".jpg"' }), { error: 'a list of extensions such as [".jpg", ".png"]' })
    .transform((list) => list.map((ext) => (ext.startsWith('.') ? ext : `.${ext}`).toLowerCase()));

/** A 256-bit key in hex; the message names what is wrong, since a bad key must stop start-up. */
const hexKey = () =>
  text().superRefine((value, ctx) => {
    if (!/^[0-9a-fA-F]*$/.test(value) || value.length % 2 === 1) ctx.addIssue({ code: 'custom', message: '64 hex characters (a 32-byte key); this is not hex (odd length or a non-hex character)' });
    else if (value.length !== 64) ctx.addIssue({ code: 'custom', message: `64 hex characters (a 32-byte key), not ${value.length / 2} bytes` });
  });

/** "" or an absolute http(s) URL without query or fragment; kept without its trailing slash. */
const publicUrl = () =>
  text().transform((value, ctx) => {
    if (value === '') return '';
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      url = new URL('invalid:');
    }
    if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '' || !/^https?:\/\//i.test(value)) {
      ctx.addIssue({ code: 'custom', message: 'an absolute http:// or https:// URL without query, such as "https://files.example.org"' });
      return z.NEVER;
    }
    return `${url.origin}${url.pathname.replace(/\/+$/, '')}`;
  });

const SEGMENT = /^[A-Za-z0-9_-][A-Za-z0-9._-]*$/;
const PREFIX = /^[A-Za-z0-9_-][A-Za-z0-9._-]*(\/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$/;

export const PROTOCOLS = ['v', 'v2', 'token', 'jwt'] as const;
export type Protocol = (typeof PROTOCOLS)[number];

const secretList = () => z.array(text().min(1, { error: 'a non-empty secret' }), { error: 'a list of secrets' });

/** One signing tenant: a URL prefix with its own secrets and accepted protocols (README, "Several XMPP servers"). */
const tenant = z.object(
  {
    Prefix: text().regex(PREFIX, { error: 'a URL prefix such as "upload/example.org" (segments of letters, digits, "_", "-", ".")' }),
    Secret: text().min(1, { error: 'a non-empty secret' }),
    PreviousSecrets: secretList().prefault([]),
    Protocols: z
      .array(z.enum(PROTOCOLS, { error: 'one of "v", "v2", "token", "jwt"' }), { error: 'a list such as ["v", "v2"]' })
      .min(1, { error: 'at least one protocol' })
      .prefault([...PROTOCOLS]),
    UserDirInPath: bool().prefault(false),
    // Quotas of this tenant; absent: the top-level key's.
    MaxBytesPerUser: size().optional(),
    MaxFilesPerUser: count(0).optional(),
    MaxBytesPerUserPerDay: size().optional(),
    MaxBytesPerTenant: size().optional(),
  },
  { error: 'a table with Prefix, Secret and optionally PreviousSecrets, Protocols, UserDirInPath and the Max…Per… quota keys' },
).strict();

export const configSchema = z.object({
  // Server
  ListenIP: ipLiteral(),
  ListenPort: port(),
  UnixSocket: bool(),
  UnixSocketPath: text().min(1, { error: 'a file path' }),
  Secret: text().min(1, { error: 'a non-empty secret shared with the XMPP server' }),
  PreviousSecrets: secretList(),
  Tenants: z.array(tenant, { error: 'a list of [[Tenants]] tables' }),
  StoreDir: text().min(1, { error: 'a directory path' }),
  UploadSubDir: text().regex(SEGMENT, { error: 'one path segment of letters, digits, "_", "-" or "." (not starting with ".")' }),
  MaxUploadSize: size().refine((bytes) => bytes >= 1, { error: 'a size of at least 1 byte' }),
  TrustedProxies: cidrList(),
  PublicURL: publicUrl(),
  InstanceID: text().regex(/^[\w.:@-]*$/, { error: 'letters, digits and . : @ _ - only' }),
  DeleteSecret: text(),
  AdminToken: text().refine((v) => v === '' || v.length >= 16, { error: 'a token of at least 16 characters, or "" for no admin API' }),
  LoggingEnabled: bool(),
  LogLevel: z.enum(['debug', 'info', 'warn', 'error'], { error: 'one of "debug", "info", "warn", "error"' }),
  LogFile: text(),
  AuditLogFile: text(),
  LogFormat: z.enum(['text', 'json'], { error: 'one of "text", "json"' }),
  ListenIPMetrics: ipLiteral(),
  MetricsEnabled: bool(),
  MetricsPort: port(),
  FileTTL: duration(),
  ResumableUploadsEnabled: bool(),
  TusPath: text().regex(/^\/[A-Za-z0-9_-][A-Za-z0-9._-]*\/$/, { error: 'a URL path of one segment such as "/files/"' }),
  WebUploadEnabled: bool(),
  WebUploadPath: text().regex(/^\/([A-Za-z0-9_-][A-Za-z0-9._-]*\/)*$/, { error: 'a URL path that starts and ends with "/", such as "/" or "/send/"' }),
  GrantSecret: text(),
  TusUploadExpiry: duration(),
  ResumableDownloadsEnabled: bool(),
  VerifyPlaintextDownloads: bool(),
  EnableVersioning: bool(),
  MaxVersions: count(1),
  ChunkedUploadsEnabled: bool(),
  ChunkSize: size(),
  AllowedExtensions: extensions(),
  NumWorkers: count(0),
  UploadQueueSize: count(0),
  ReadTimeout: duration(),
  WriteTimeout: duration(),
  IdleTimeout: duration(),
  ReadHeaderTimeout: duration().refine((ms) => ms > 0, { error: `${DURATION_FORM}, not 0` }),
  UploadStallTimeout: duration(),
  MaxConnectionsPerIP: count(0),
  GracefulShutdownTimeout: duration(),
  // Encryption
  AESEnabled: bool(),
  Method: z.enum(['aes', 'xor'], { error: 'one of "aes", "xor"' }),
  AESKey: hexKey().or(z.literal('')),
  XORKey: hexKey().or(z.literal('')),
  PreviousAESKeys: z.array(hexKey(), { error: 'a list of keys of 64 hex characters' }),
  PreviousXORKeys: z.array(hexKey(), { error: 'a list of keys of 64 hex characters' }),
  XOREnabled: bool(),
  // TLS (server/tls.ts) and ACME (server/acme.ts)
  EnableTLS: bool(),
  CertDir: text(),
  // Each host name is also a folder name below CertDir: no "/", no "..", no leading ".".
  Hostnames: z.array(text().regex(/^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*$/, { error: 'a host name such as "files.example.org"' }), { error: 'a list of host names' }),
  UseStaging: bool(),
  ACMEEnabled: bool(),
  ACMEDirectoryURL: text().refine((v) => v === '' || /^https?:\/\/[^\s/]+/.test(v), { error: 'an ACME directory URL such as "https://acme.example.org/directory", or "" for Let\'s Encrypt' }),
  ACMEEmail: text(),
  ACMEHTTPPort: port(),
  ACMECAFile: text(),
  // ClamAV
  ClamAVEnabled: bool(),
  ClamAVSocket: text(),
  NumScanWorkers: count(1),
  ClamAVTimeout: duration(),
  ClamAVFailOpen: bool(),
  ClamAVHealthCheckInterval: duration(),
  // Redis
  RedisEnabled: bool(),
  RedisAddr: text(),
  RedisPassword: text(),
  RedisDBIndex: count(0),
  RedisHealthCheckInterval: duration(),
  RedisSentinels: z.array(text().regex(/^[^\s:]+:\d+$/, { error: 'a host:port address' }), { error: 'a list of Sentinel addresses such as ["10.0.0.1:26379"]' }),
  RedisSentinelName: text(),
  // IP management
  EnableIPManagement: bool(),
  AllowedIPs: cidrList(),
  BlockedIPs: cidrList(),
  IPCheckInterval: duration(),
  IPSource: z.enum(['header', 'nginx-log'], { error: 'one of "header", "nginx-log"' }),
  NginxLogFile: text(),
  // Rate limiting
  EnableRateLimiting: bool(),
  RequestsPerMinute: count(1),
  RateLimitInterval: duration().refine((ms) => ms > 0, { error: `${DURATION_FORM}, not 0` }),
  AuthFailuresPerMinute: count(1),
  // Fail2Ban
  Fail2BanEnabled: bool(),
  Fail2BanCommand: text(),
  Fail2BanJail: text(),
  Fail2BanMaxRetry: count(1),
  Fail2BanFindTime: duration().refine((ms) => ms > 0, { error: `${DURATION_FORM}, not 0` }),
  // Deduplication
  DeduplicationEnabled: bool(),
  // Quotas (server/quotas.ts); 0 = none
  MaxBytesPerUser: size(),
  MaxFilesPerUser: count(0),
  MaxBytesPerUserPerDay: size(),
  MaxBytesPerTenant: size(),
  // Object storage (stores/s3-storage.ts)
  StorageBackend: z.enum(['fs', 's3'], { error: 'one of "fs", "s3"' }),
  S3Endpoint: text().refine((v) => v === '' || /^https?:\/\/[^\s/?#]+\/?$/.test(v), { error: 'an http:// or https:// URL of the S3 service such as "https://s3.example.org", or "" for AWS' }),
  S3Bucket: text().regex(/^$|^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, { error: 'a bucket name of 3-63 lower-case letters, digits, "." and "-"' }),
  S3Region: text().min(1, { error: 'a region such as "us-east-1"' }),
  S3AccessKeyID: text(),
  S3SecretAccessKey: text(),
  S3ForcePathStyle: bool(),
}).superRefine((config, ctx) => {
  if (config.StorageBackend === 's3' && config.S3Bucket === '') ctx.addIssue({ code: 'custom', path: ['S3Bucket'], message: 'a bucket name when StorageBackend = "s3"' });
  if (config.TusPath === `/${config.UploadSubDir}/`) ctx.addIssue({ code: 'custom', path: ['TusPath'], message: 'a path other than UploadSubDir' });
  // The page's files live directly below it; it may sit at "/" but not inside the upload tree or TusPath.
  for (const taken of [`/${config.UploadSubDir}/`, config.TusPath]) {
    if (config.WebUploadPath.startsWith(taken)) ctx.addIssue({ code: 'custom', path: ['WebUploadPath'], message: `a path outside ${taken}` });
  }
  const seen = new Set([config.UploadSubDir]);
  config.Tenants.forEach((t, i) => {
    if (`/${t.Prefix.split('/')[0]}/` === config.TusPath) ctx.addIssue({ code: 'custom', path: ['Tenants', i, 'Prefix'], message: 'a prefix outside TusPath' });
    if (seen.has(t.Prefix)) ctx.addIssue({ code: 'custom', path: ['Tenants', i, 'Prefix'], message: 'a prefix no other tenant (or UploadSubDir) uses' });
    seen.add(t.Prefix);
  });
});

export type TenantConfig = z.output<typeof tenant>;
export type ConfigInput = z.input<typeof configSchema>;
export type ConfigKey = keyof ConfigInput;
export type Config = Readonly<z.output<typeof configSchema>>;

/** Defaults, in the form a user writes them. Services that need installing are off. */
export const DEFAULTS: { readonly [K in ConfigKey]-?: Exclude<ConfigInput[K], undefined> } = {
  ListenIP: '127.0.0.1',
  ListenPort: '8080',
  UnixSocket: false,
  UnixSocketPath: '/run/hmac-file-server/hmac-file-server.sock',
  Secret: '',
  PreviousSecrets: [],
  Tenants: [],
  StoreDir: '/var/lib/hmac-files',
  UploadSubDir: 'upload',
  MaxUploadSize: '100MiB',
  TrustedProxies: ['127.0.0.0/8', '::1/128'],
  PublicURL: '',
  InstanceID: '',
  DeleteSecret: '',
  AdminToken: '',
  LoggingEnabled: true,
  LogLevel: 'info',
  LogFile: '',
  AuditLogFile: '',
  LogFormat: 'text',
  ListenIPMetrics: '127.0.0.1',
  MetricsEnabled: false,
  MetricsPort: '9090',
  FileTTL: '0',
  ResumableUploadsEnabled: true,
  TusPath: '/files/',
  WebUploadEnabled: false,
  WebUploadPath: '/',
  GrantSecret: '',
  TusUploadExpiry: '24h',
  ResumableDownloadsEnabled: true,
  VerifyPlaintextDownloads: false,
  EnableVersioning: false,
  MaxVersions: 5,
  ChunkedUploadsEnabled: true,
  ChunkSize: 1048576,
  AllowedExtensions: [],
  NumWorkers: 64,
  UploadQueueSize: 256,
  ReadTimeout: '4800s',
  WriteTimeout: '4800s',
  IdleTimeout: '65s',
  ReadHeaderTimeout: '60s',
  UploadStallTimeout: '60s',
  MaxConnectionsPerIP: 64,
  GracefulShutdownTimeout: '10s',
  AESEnabled: false,
  Method: 'aes',
  AESKey: '',
  XORKey: '',
  PreviousAESKeys: [],
  PreviousXORKeys: [],
  XOREnabled: false,
  EnableTLS: false,
  CertDir: '/var/lib/hmac-file-server/certs',
  Hostnames: [],
  UseStaging: false,
  ACMEEnabled: true,
  ACMEDirectoryURL: '',
  ACMEEmail: '',
  ACMEHTTPPort: '80',
  ACMECAFile: '',
  ClamAVEnabled: false,
  ClamAVSocket: '/var/run/clamav/clamd.ctl',
  NumScanWorkers: 5,
  ClamAVTimeout: '60s',
  ClamAVFailOpen: false,
  ClamAVHealthCheckInterval: '30s',
  RedisEnabled: false,
  RedisAddr: 'localhost:6379',
  RedisPassword: '',
  RedisDBIndex: 0,
  RedisHealthCheckInterval: '30s',
  RedisSentinels: [],
  RedisSentinelName: 'mymaster',
  EnableIPManagement: false,
  AllowedIPs: ['0.0.0.0/0', '::/0'],
  BlockedIPs: [],
  IPCheckInterval: '60s',
  IPSource: 'header',
  NginxLogFile: '/var/log/nginx/access.log',
  EnableRateLimiting: false,
  RequestsPerMinute: 60,
  RateLimitInterval: '1m',
  AuthFailuresPerMinute: 10,
  Fail2BanEnabled: false,
  Fail2BanCommand: '/usr/bin/fail2ban-client',
  Fail2BanJail: 'hmac-auth',
  Fail2BanMaxRetry: 5,
  Fail2BanFindTime: '10m',
  DeduplicationEnabled: false,
  MaxBytesPerUser: '0',
  MaxFilesPerUser: 0,
  MaxBytesPerUserPerDay: '0',
  MaxBytesPerTenant: '0',
  StorageBackend: 'fs',
  S3Endpoint: '',
  S3Bucket: '',
  S3Region: 'us-east-1',
  S3AccessKeyID: '',
  S3SecretAccessKey: '',
  S3ForcePathStyle: false,
};

/**
 * Keys of features that later releases activate. Setting one to a value that turns its feature on is
 * accepted but reported, so nobody believes a file is encrypted or scanned when it is not.
 */
export const NOT_YET_ACTIVE: ReadonlyArray<readonly [ConfigKey, (c: Config) => boolean]> = [
  ['RedisEnabled', (c) => c.RedisEnabled && !c.DeduplicationEnabled && !c.EnableRateLimiting],
];
