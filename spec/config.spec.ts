import assert from 'node:assert/strict';
import { readFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { ConfigError, EXAMPLE_SECRET, loadConfig, parseConfigText } from '../server/config.js';
import { DEFAULTS } from '../server/config-schema.js';
import { runCli } from './helpers/cli.js';

const SEED_EXAMPLE = path.resolve(import.meta.dirname, 'fixtures/seed-config.toml');

function problemsOf(text: string): readonly string[] {
  try {
    parseConfigText(text, '/srv');
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  assert.fail('expected a ConfigError');
}

describe('configuration', () => {
  it('accepts the seed example config.toml with every key under its own name', async () => {
    const toml = await readFile(SEED_EXAMPLE, 'utf8');
    const { config, warnings } = parseConfigText(toml, '/srv');
    assert.equal(warnings.filter((w) => w.startsWith('unknown key')).length, 0, warnings.join('\n'));
    assert.equal(config.ListenPort, 8080);
    assert.equal(config.FileTTL, 365 * 86_400_000);
    assert.equal(config.ReadTimeout, 4_800_000);
    assert.equal(config.GracefulShutdownTimeout, 10_000);
    assert.deepEqual(config.AllowedExtensions.slice(0, 2), ['.txt', '.pdf']);
    // Every feature the seed names is built: none of its keys is reported as ignored.
    assert.ok(!warnings.some((w) => w.includes('not yet active')), warnings.join('\n'));
    for (const active of ['ClamAVEnabled', 'RedisEnabled', 'DeduplicationEnabled', 'EnableVersioning', 'FileTTL', 'MetricsEnabled', 'Fail2BanEnabled']) {
      assert.ok(!warnings.some((w) => w.startsWith(active)), active);
    }
  });

  it('takes WebUploadPath outside the upload tree and TusPath only', () => {
    assert.equal(parseConfigText('Secret = "s"\nWebUploadPath = "/send/"\n', '/srv').config.WebUploadPath, '/send/');
    for (const bad of ['/upload/', '/upload/page/', '/files/', 'send/', '/send', '/../']) {
      assert.match(problemsOf(`Secret = "s"\nWebUploadPath = "${bad}"\n`)[0] ?? '', /^WebUploadPath = /, bad);
    }
  });

  it('takes PublicURL as an absolute http(s) URL, without its trailing slash, and refuses anything else', () => {
    assert.equal(parseConfigText('Secret = "s"\nPublicURL = "https://files.example.org/"\n', '/srv').config.PublicURL, 'https://files.example.org');
    assert.equal(parseConfigText('Secret = "s"\nPublicURL = "http://example.org:8080/share/"\n', '/srv').config.PublicURL, 'http://example.org:8080/share');
    assert.equal(parseConfigText('Secret = "s"\n', '/srv').config.PublicURL, '');
    for (const bad of ['files.example.org', 'ftp://example.org', 'https://example.org/?a=1', 'https://example.org/#x', 'https://user:pw@example.org', '//example.org']) {
      const problems = problemsOf(`Secret = "s"\nPublicURL = "${bad}"\n`);
      assert.match(problems[0] ?? '', /^PublicURL = ".*": expected an absolute http:\/\/ or https:\/\/ URL/, bad);
    }
  });

  it('every key of the shipped config.toml is a key of the schema', async () => {
    const shipped = parseToml(await readFile(path.resolve(import.meta.dirname, '../config.toml'), 'utf8'));
    for (const key of Object.keys(shipped)) assert.ok(Object.hasOwn(DEFAULTS, key), key);
  });

  it('documents every key in the README configuration table', async () => {
    const readme = await readFile(path.resolve(import.meta.dirname, '../README.md'), 'utf8');
    const table = readme.slice(readme.indexOf('## Configuration'));
    for (const key of Object.keys(DEFAULTS)) assert.ok(table.includes(`\`${key}\``), `${key} is missing from the README`);
  });

  it('warns about an unknown key by name and still starts', () => {
    const { warnings } = parseConfigText('Secret = "s"\nListenPrt = "8080"\n', '/srv');
    assert.deepEqual(warnings, ['unknown key ListenPrt (ignored): did you mean ListenPort?']);
  });

  it('suggests the known key for a wrong case or up to two edits, and nothing for a stranger', () => {
    const { warnings } = parseConfigText('Secret = "s"\nmaxuploadsize = "1MB"\nFileTTl = "1d"\nDedupliactionEnabled = true\nFrobnicate = 1\n', '/srv');
    assert.deepEqual(warnings, [
      'unknown key maxuploadsize (ignored): did you mean MaxUploadSize?',
      'unknown key FileTTl (ignored): did you mean FileTTL?',
      'unknown key DedupliactionEnabled (ignored): did you mean DeduplicationEnabled?',
      'unknown key Frobnicate (ignored)',
    ]);
  });

  it('lists unknown keys among the problems when the config is invalid', () => {
    const problems = problemsOf('Secret = "s"\nMaxUplodSize = "x"\nListenPort = "http"\n');
    assert.deepEqual(problems, ['ListenPort = "http": expected a port number 0-65535', 'unknown key MaxUplodSize (ignored): did you mean MaxUploadSize?']);
  });

  it('names the absolute path of a config file it cannot read', () => {
    assert.throws(() => loadConfig('no-such-dir/config.toml'), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.deepEqual(err.problems, [`cannot read ${path.resolve('no-such-dir/config.toml')}: ENOENT (no such file)`]);
      return true;
    });
  });

  it('names key, value and expected form for every invalid value at once', () => {
    const problems = problemsOf('Secret = "s"\nListenPort = "http"\nFileTTL = "2 weeks"\nMaxUploadSize = "big"\nTrustedProxies = ["10.0.0.0/33"]\nLogLevel = "loud"\nUnixSocket = "yes"\n');
    assert.deepEqual(problems, [
      'ListenPort = "http": expected a port number 0-65535',
      'MaxUploadSize = "big": expected a size in bytes such as 104857600, 100MB or 1GiB',
      'TrustedProxies[0] = "10.0.0.0/33": expected a CIDR such as 10.0.0.0/8 or ::1/128',
      'LogLevel = "loud": expected one of "debug", "info", "warn", "error"',
      'FileTTL = "2 weeks": expected a duration such as 30s, 1m, 24h, 30d or 168h0m0s (a bare number is seconds)',
      'UnixSocket = "yes": expected true or false',
    ].sort((a, b) => problems.indexOf(a) - problems.indexOf(b)));
  });

  it('requires a Secret and a safe UploadSubDir', () => {
    assert.match(problemsOf('StoreDir = "/x"\n')[0]!, /^Secret = "": expected a non-empty secret/);
    assert.match(problemsOf('Secret = "s"\nUploadSubDir = "../etc"\n')[0]!, /^UploadSubDir = "\.\.\/etc"/);
    assert.match(problemsOf('Secret = "s"\nUploadSubDir = ".hmac"\n')[0]!, /^UploadSubDir = "\.hmac"/);
  });

  it('validates [[Tenants]] tables: prefix shape, uniqueness, protocols, no unknown keys', () => {
    assert.deepEqual(problemsOf('Secret = "s"\n[[Tenants]]\nPrefix = "upload"\nSecret = "a"\n'), ['Tenants[0].Prefix = "upload": expected a prefix no other tenant (or UploadSubDir) uses']);
    const problems = problemsOf(
      'Secret = "s"\n[[Tenants]]\nPrefix = "a"\nSecret = "a"\n[[Tenants]]\nPrefix = "../x"\nSecret = "b"\nProtocols = ["v3"]\n[[Tenants]]\nPrefix = "c"\nSecret = "c"\nSecrt = "typo"\n',
    );
    assert.ok(problems.some((p) => p.startsWith('Tenants[1].Prefix = "../x": expected a URL prefix')), problems.join('\n'));
    assert.ok(problems.includes('Tenants[1].Protocols[0] = "v3": expected one of "v", "v2", "token", "jwt"'), problems.join('\n'));
    assert.ok(problems.some((p) => p.startsWith('Tenants[2] = ')), problems.join('\n'));
    const { config } = parseConfigText('Secret = "s"\n[[Tenants]]\nPrefix = "upload/a.test"\nSecret = "a"\n', '/srv');
    assert.deepEqual(config.Tenants, [{ Prefix: 'upload/a.test', Secret: 'a', PreviousSecrets: [], Protocols: ['v', 'v2', 'token', 'jwt'], UserDirInPath: false }]);
  });

  it('reports broken TOML with its line', () => {
    assert.match(problemsOf('Secret = "s"\nListenPort = \n')[0]!, /not valid TOML \(line 2/);
  });

  it('resolves relative paths against the config file folder and freezes the result', () => {
    const { config } = parseConfigText('Secret = "s"\nStoreDir = "data"\nAllowedExtensions = ["JPG", ".Png"]\n', '/srv/hmac');
    assert.equal(config.StoreDir, '/srv/hmac/data');
    assert.deepEqual(config.AllowedExtensions, ['.jpg', '.png']);
    assert.ok(Object.isFrozen(config) && Object.isFrozen(config.AllowedExtensions));
    assert.throws(() => ((config as { Secret: string }).Secret = 'x'), TypeError);
  });
});

describe('the example secret of the shipped config.toml', () => {
  const example = JSON.stringify(EXAMPLE_SECRET);
  const refusal = (key: string) =>
    `${key} = ${example}: the example secret from the shipped config.toml is accepted only when listening on loopback (ListenIP 127.0.0.1 or ::1, UnixSocket = false); set your own (openssl rand -hex 32)`;

  for (const listen of ['ListenIP = "0.0.0.0"', 'ListenIP = "::"', 'ListenIP = "192.0.2.1"', 'ListenIP = "127.0.0.1"\nUnixSocket = true']) {
    it(`is refused with ${listen.replace('\n', ', ')}`, () => {
      assert.deepEqual(problemsOf(`Secret = ${example}\n${listen}\n`), [refusal('Secret')]);
    });
  }

  for (const ip of ['127.0.0.1', '127.0.0.5', '::1']) {
    it(`is accepted with a warning on ListenIP = "${ip}"`, () => {
      const { warnings } = parseConfigText(`Secret = ${example}\nListenIP = "${ip}"\n`, '/srv');
      assert.deepEqual(warnings, ['Secret is the example value from the shipped config.toml: set your own before exposing the server']);
    });
  }

  const elsewhere = `Secret = "s"\nPreviousSecrets = [${example}]\n[[Tenants]]\nPrefix = "a"\nSecret = ${example}\n[[Tenants]]\nPrefix = "b"\nSecret = "b"\nPreviousSecrets = ["old", ${example}]\n`;
  const keys = ['PreviousSecrets[0]', 'Tenants[0].Secret', 'Tenants[1].PreviousSecrets[1]'];

  it('is refused in PreviousSecrets and in a tenant, each key named', () => {
    assert.deepEqual(problemsOf(`ListenIP = "0.0.0.0"\n${elsewhere}`), keys.map(refusal));
  });

  it('is accepted there on loopback, with a warning per key', () => {
    const { warnings } = parseConfigText(`ListenIP = "::1"\n${elsewhere}`, '/srv');
    assert.deepEqual(warnings, keys.map((key) => `${key} is the example value from the shipped config.toml: set your own before exposing the server`));
  });
});

describe('command line', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'hfs-cli-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('exits 2 naming key, value and form for an invalid value', async () => {
    await writeFile(path.join(dir, 'bad.toml'), 'Secret = "s"\nIdleTimeout = "soon"\n');
    const result = await runCli(['--config', path.join(dir, 'bad.toml')]);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /IdleTimeout = "soon": expected a duration/);
  });

  it('exits 2 when the config file is missing', async () => {
    const result = await runCli(['--config', path.join(dir, 'nope.toml'), '--validate-config']);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /cannot read .*nope\.toml: ENOENT/);
  });

  it('--validate-config exits 2 for the example secret on every interface', async () => {
    const file = path.join(dir, 'exposed.toml');
    await writeFile(file, `Secret = ${JSON.stringify(EXAMPLE_SECRET)}\nListenIP = "0.0.0.0"\n`);
    const result = await runCli(['--config', file, '--validate-config']);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /config: error: Secret = "change-me-[^"]*": the example secret from the shipped config\.toml is accepted only when listening on loopback/);
    assert.doesNotMatch(result.stdout, /OK/);
  });

  it('--validate-config checks the shipped config.toml and prints OK', async () => {
    const result = await runCli(['--validate-config']);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /config\.toml: OK/);
  });

  it('--print-default-config prints a config that validates once a Secret is set', async () => {
    const printed = await runCli(['--print-default-config']);
    assert.equal(printed.code, 0);
    const file = path.join(dir, 'default.toml');
    await writeFile(file, printed.stdout.replace(/^Secret = ""$/m, 'Secret = "s3cret"'));
    const result = await runCli(['--config', file, '--validate-config']);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stderr, '');
  });
});
