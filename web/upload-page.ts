// The upload page: Uppy's Dashboard over tus to this server. The grant comes from the URL fragment
// (#grant=…, which browsers never send to a server) or a paste field; its public claims set Uppy's limits. A
// finished file shows its download link with a copy button; a refusal shows the server's own reason.
import Uppy, { type UppyFile } from '@uppy/core';
import Dashboard from '@uppy/dashboard';
import Tus from '@uppy/tus';

interface Claims {
  sub?: string;
  exp?: number;
  max_size?: number;
  filename?: string;
}

const MiB = 1024 * 1024;
const byId = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

/** The grant's claims, read without checking its signature: the server does that, this only shows limits. */
function claimsOf(grant: string): Claims | undefined {
  const payload = grant.split('.')[1];
  if (!payload) return undefined;
  try {
    return JSON.parse(atob(payload.replace(/-/g, '+').replace(/_/g, '/'))) as Claims;
  } catch {
    return undefined;
  }
}

function grantFromFragment(): string | undefined {
  const grant = new URLSearchParams(location.hash.slice(1)).get('grant') ?? undefined;
  // Out of the address bar, so it is not copied or bookmarked with the page.
  if (grant) history.replaceState(null, '', location.pathname + location.search);
  return grant;
}

/** What the server said about a refused upload: its one-line answer, else the client's own message. */
function reasonOf(error: Error & { originalResponse?: { getStatus(): number; getBody(): string } | null }): string {
  const response = error.originalResponse;
  const body = response?.getBody()?.trim();
  return body ? `${body} (${response!.getStatus()})` : error.message;
}

function showLimits(claims: Claims | undefined): void {
  const limits = byId<HTMLParagraphElement>('limits');
  const parts: string[] = [];
  if (claims?.max_size !== undefined) parts.push(`files up to ${(claims.max_size / MiB).toFixed(1)} MiB`);
  if (claims?.filename !== undefined) parts.push(`only a file named “${claims.filename}”`);
  if (claims?.exp !== undefined) parts.push(`until ${new Date(claims.exp * 1000).toLocaleString()}`);
  limits.textContent = parts.length > 0 ? `This link allows ${parts.join(', ')}.` : '';
  limits.hidden = parts.length === 0;
}

function addDone(name: string, url: string): void {
  byId('done-title').hidden = false;
  const item = document.createElement('li');
  const link = document.createElement('a');
  link.href = url;
  link.textContent = name;
  const copy = document.createElement('button');
  copy.type = 'button';
  copy.textContent = 'Copy link';
  copy.setAttribute('aria-label', `Copy the link to ${name}`);
  copy.addEventListener('click', () => {
    void navigator.clipboard.writeText(url).then(
      () => (copy.textContent = 'Copied'),
      () => (copy.textContent = 'Copy failed'),
    );
  });
  item.append(link, copy);
  byId('done').append(item);
}

function start(grant: string): void {
  const claims = claimsOf(grant);
  showLimits(claims);
  const status = byId<HTMLParagraphElement>('status');
  const downloads = new Map<string, string>();
  // Refused here for its name: Uppy then reports its own generic reason, which must not replace ours.
  let refusedName: string | undefined;
  const uppy = new Uppy({
    restrictions: { ...(claims?.max_size !== undefined ? { maxFileSize: claims.max_size } : {}) },
    onBeforeFileAdded: (file: UppyFile<Record<string, unknown>, Record<string, never>>) => {
      if (claims?.filename !== undefined && file.name !== claims.filename) {
        refusedName = file.name;
        status.textContent = `${file.name}: this link only allows a file named “${claims.filename}”.`;
        return false;
      }
      return true;
    },
  });
  uppy.use(Dashboard, { target: '#dashboard', inline: true, width: '100%', height: 420, proudlyDisplayPoweredByUppy: false });
  uppy.use(Tus, {
    endpoint: document.body.dataset.endpoint ?? '/files/',
    headers: { Authorization: `Bearer ${grant}` },
    chunkSize: 8 * MiB,
    retryDelays: [0, 1000, 3000, 5000],
    // Only the name and type travel as tus metadata.
    allowedMetaFields: ['name', 'type'],
    onAfterResponse: (req, res) => {
      const url = res.getHeader('X-Download-URL');
      if (url) downloads.set(req.getURL(), url);
    },
  });
  uppy.on('restriction-failed', (file, error) => {
    if (file?.name !== undefined && file.name === refusedName) return;
    status.textContent = `${file?.name ?? 'File'}: ${error.message}`;
  });
  uppy.on('upload-error', (file, error) => {
    status.textContent = `${file?.name ?? 'File'}: ${reasonOf(error)}`;
  });
  uppy.on('upload-success', (file, response) => {
    const url = response.uploadURL ? downloads.get(response.uploadURL) : undefined;
    if (file && url) addDone(file.name ?? 'file', url);
  });
}

const grant = grantFromFragment();
if (grant) {
  start(grant);
} else {
  const form = byId<HTMLFormElement>('grant-form');
  form.hidden = false;
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const value = byId<HTMLInputElement>('grant-input').value.trim();
    if (!value) return;
    form.hidden = true;
    start(value);
  });
}
