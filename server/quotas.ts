// Quotas: bytes and files stored per user, bytes uploaded per user per day, bytes stored per tenant. An upload is
// charged before its body is read, atomically against every limit it is under (so parallel uploads at the edge
// never end above it), and refunded if it is not stored after all; a stored copy that goes (deletion, expiry,
// a pruned version) gives its bytes and its file back, but not the day's: those were uploaded. Uploads that
// name no user (v, v2, token slots) count for their tenant only. The counts live in a ledger (in memory, or in
// Redis for several instances) and are recounted from the stored metadata, which is the truth.
import { HttpError, httpError, RETRY_AFTER_SECONDS } from './errors.js';
import type { Logger } from './logger.js';
import type { AuditLog } from './audit-log.js';
import type { FileMetadata } from '../stores/file-metadata.js';
import type { StoredRecord } from '../stores/storage.js';

/** 0: no limit. */
export interface QuotaLimits {
  userBytes: number;
  userFiles: number;
  userDailyBytes: number;
  tenantBytes: number;
}

export function hasQuota(limits: QuotaLimits): boolean {
  return limits.userBytes > 0 || limits.userFiles > 0 || limits.userDailyBytes > 0 || limits.tenantBytes > 0;
}

export interface Charge {
  tenant: string;
  user?: string;
  bytes: number;
  files: number;
  /** The UTC day (YYYY-MM-DD) whose uploaded bytes this charge counts for; none for a removal. */
  day?: string;
}

export type QuotaLimit = 'user-bytes' | 'user-files' | 'user-day' | 'tenant-bytes';

export interface Refusal {
  limit: QuotaLimit;
  used: number;
  max: number;
}

export interface Usage {
  bytes: number;
  files: number;
}

/** Everything the stored metadata says, for a recount. */
export interface QuotaTotals {
  tenants: Map<string, Usage>;
  /** Keyed by userKey(tenant, user). */
  users: Map<string, Usage>;
  /** Keyed by dayKey(tenant, user, day): today's uploads of files still stored. */
  days: Map<string, number>;
}

export const userKey = (tenant: string, user: string) => `${tenant}\u0000${user}`;
export const dayKey = (tenant: string, user: string, day: string) => `${day}\u0000${tenant}\u0000${user}`;

export interface QuotaLedger {
  /** Adds the charge when no limit would be passed by it; otherwise changes nothing and names the first limit. */
  charge(charge: Charge, limits: QuotaLimits): Promise<Refusal | undefined>;
  /** Takes a charge back: its bytes and files, and its day's bytes when it names a day. */
  refund(charge: Charge): Promise<void>;
  usage(tenant: string, user?: string, day?: string): Promise<Usage & { today: number }>;
  /** Puts the recounted totals in place of every count. */
  replace(totals: QuotaTotals): Promise<void>;
}

export interface Reservation {
  /** The UTC day (YYYY-MM-DD) the charge counts for. */
  day: string;
  /** Gives the charge back, once. */
  refund(): Promise<void>;
}

export interface QuotaCounters {
  /** Refusals by code (E_QUOTA, E_TENANT_QUOTA). */
  refused: Record<string, number>;
}

/** Sizes as a person reads them: "1.9 GiB", "512 KiB", "300 bytes". */
export function sizeText(bytes: number): string {
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 'bytes';
  for (const next of units) {
    if (value < 1024) break;
    value /= 1024;
    unit = next;
  }
  return unit === 'bytes' ? `${bytes} bytes` : `${Number(value.toFixed(1))} ${unit}`;
}

function refusalMessage(refusal: Refusal): string {
  switch (refusal.limit) {
    case 'user-files':
      return `Quota exceeded: ${refusal.used} of ${refusal.max} files stored`;
    case 'user-day':
      return `Quota exceeded: ${sizeText(refusal.used)} of ${sizeText(refusal.max)} uploaded today`;
    case 'tenant-bytes':
      return `Storage quota exceeded: ${sizeText(refusal.used)} of ${sizeText(refusal.max)} used`;
    default:
      return `Quota exceeded: ${sizeText(refusal.used)} of ${sizeText(refusal.max)} used`;
  }
}

export interface QuotaDeps {
  ledger: QuotaLedger;
  /** Per tenant prefix. */
  limits: ReadonlyMap<string, QuotaLimits>;
  /** Prefix of files whose metadata names none. */
  defaultPrefix: string;
  logger: Logger;
  /** AuditLogFile: every refusal, with what the caller says of the upload. */
  audit?: AuditLog;
  now?: () => Date;
}

/** What the audit line of a refusal says of the upload. */
export interface ChargeContext {
  path?: string;
  client?: string;
  door: string;
}

export interface Quotas {
  /** Whether the tenant has any quota (nothing is charged where it has none). */
  applies(tenant: string): boolean;
  /**
   * Charges an upload of size bytes, before its body is read; 413 E_QUOTA (a user's quota) or 507
   * E_TENANT_QUOTA with the reason otherwise. Returns the day it counts for, and the refund for an upload
   * that is then not stored.
   */
  reserve(tenant: string, user: string | undefined, size: number, context?: ChargeContext): Promise<Reservation>;
  /** A stored copy went: its bytes and its file are free again. */
  removed(meta: FileMetadata): Promise<void>;
  /**
   * What the user may still upload before a limit refuses them, and that limit's refusal (for an upload not yet
   * charged, to stop it as its bytes arrive); undefined when no limit applies.
   */
  headroom(tenant: string, user: string | undefined): Promise<{ bytes: number; refusal: Refusal } | undefined>;
  /** The refusal of an upload of size bytes over headroom: the error reserve() would throw. */
  refuse(refusal: Refusal, context: { tenant: string; user?: string; size: number } & ChargeContext): never;
  /** Gives back a charge made by reserve() (an upload that holds one and was not stored after all). */
  refund(charge: Charge): Promise<void>;
  /** The UTC day a charge made now counts for. */
  today(): string;
  /** Counts everything again from the stored metadata (and the uploads in progress that hold a charge). */
  recount(records: AsyncIterable<StoredRecord>, pending?: Iterable<Charge>): Promise<void>;
  usage(tenant: string, user?: string): Promise<Usage & { today: number }>;
  counters: QuotaCounters;
  /** A refund could not be written (Redis away): the counts are off until the next recount. */
  stale(): boolean;
}

/** The ledger does not answer (Redis down): quotas cannot be checked, so nothing is stored meanwhile. */
function ledgerDown(err: unknown): never {
  if (err instanceof HttpError) throw err;
  throw httpError('E_COORDINATION_DOWN', { cause: err, headers: { 'Retry-After': String(RETRY_AFTER_SECONDS) } });
}

const utcDay = (date: Date) => date.toISOString().slice(0, 10);

export function createQuotas(deps: QuotaDeps): Quotas {
  const now = deps.now ?? (() => new Date());
  const counters: QuotaCounters = { refused: {} };
  let stale = false;
  const refund = (charge: Charge) =>
    deps.ledger.refund(charge).catch((err: unknown) => {
      stale = true;
      deps.logger.warn('quota.refund_failed', { tenant: charge.tenant, cause: err instanceof Error ? err.message : String(err), note: 'counted again once the ledger answers' });
    });
  const limitsOf = (tenant: string) => deps.limits.get(tenant);
  const applies = (tenant: string) => {
    const limits = limitsOf(tenant);
    return limits !== undefined && hasQuota(limits);
  };
  const refuse = (refusal: Refusal, context: { tenant: string; user?: string; size: number } & ChargeContext): never => {
    const code = refusal.limit === 'tenant-bytes' ? 'E_TENANT_QUOTA' : 'E_QUOTA';
    counters.refused[code] = (counters.refused[code] ?? 0) + 1;
    const { tenant, user, size, path, client, door } = context;
    deps.audit?.record({ action: 'quota_refused', tenant, size, door, ...(path !== undefined ? { path } : {}), ...(user !== undefined ? { user } : {}), ...(client !== undefined ? { client } : {}), limit: refusal.limit });
    throw httpError(code, { message: refusalMessage(refusal) });
  };
  return {
    applies,
    async reserve(tenant, user, size, context) {
      const limits = limitsOf(tenant);
      const day = utcDay(now());
      if (!limits || !hasQuota(limits)) return { day, refund: () => Promise.resolve() };
      const charge: Charge = { tenant, ...(user !== undefined ? { user } : {}), bytes: size, files: 1, day };
      const refusal = await deps.ledger.charge(charge, limits).catch(ledgerDown);
      if (refusal) refuse(refusal, { tenant, ...(user !== undefined ? { user } : {}), size, door: context?.door ?? 'unknown', ...context });
      let refunded = false;
      return {
        day,
        refund: async () => {
          if (refunded) return;
          refunded = true;
          await refund(charge);
        },
      };
    },
    async removed(meta) {
      const tenant = meta.prefix ?? deps.defaultPrefix;
      if (!applies(tenant)) return;
      await refund({ tenant, ...(meta.owner !== undefined ? { user: meta.owner } : {}), bytes: meta.size, files: 1 });
    },
    async recount(records, pending = []) {
      const totals: QuotaTotals = { tenants: new Map(), users: new Map(), days: new Map() };
      const today = utcDay(now());
      const add = (charge: Charge) => {
        const tenant = totals.tenants.get(charge.tenant) ?? { bytes: 0, files: 0 };
        totals.tenants.set(charge.tenant, { bytes: tenant.bytes + charge.bytes, files: tenant.files + charge.files });
        if (charge.user === undefined) return;
        const key = userKey(charge.tenant, charge.user);
        const user = totals.users.get(key) ?? { bytes: 0, files: 0 };
        totals.users.set(key, { bytes: user.bytes + charge.bytes, files: user.files + charge.files });
        if (charge.day === today) totals.days.set(dayKey(charge.tenant, charge.user, today), (totals.days.get(dayKey(charge.tenant, charge.user, today)) ?? 0) + charge.bytes);
      };
      for await (const { meta } of records) {
        add({ tenant: meta.prefix ?? deps.defaultPrefix, ...(meta.owner !== undefined ? { user: meta.owner } : {}), bytes: meta.size, files: 1, day: meta.createdAt.slice(0, 10) });
      }
      for (const charge of pending) add(charge);
      await deps.ledger.replace(totals);
      stale = false;
      deps.logger.info('quota.recounted', { tenants: totals.tenants.size, users: totals.users.size });
    },
    usage: (tenant, user) => deps.ledger.usage(tenant, user, utcDay(now())),
    async headroom(tenant, user) {
      const limits = limitsOf(tenant);
      if (!limits || !hasQuota(limits)) return undefined;
      const day = utcDay(now());
      const [inTenant, own] = await Promise.all([deps.ledger.usage(tenant, undefined, day), user !== undefined ? deps.ledger.usage(tenant, user, day) : undefined]).catch(ledgerDown);
      const room: Array<{ bytes: number; refusal: Refusal }> = [];
      if (limits.tenantBytes > 0) room.push({ bytes: limits.tenantBytes - inTenant.bytes, refusal: { limit: 'tenant-bytes', used: inTenant.bytes, max: limits.tenantBytes } });
      if (own && limits.userBytes > 0) room.push({ bytes: limits.userBytes - own.bytes, refusal: { limit: 'user-bytes', used: own.bytes, max: limits.userBytes } });
      if (own && limits.userDailyBytes > 0) room.push({ bytes: limits.userDailyBytes - own.today, refusal: { limit: 'user-day', used: own.today, max: limits.userDailyBytes } });
      if (own && limits.userFiles > 0 && own.files >= limits.userFiles) room.push({ bytes: 0, refusal: { limit: 'user-files', used: own.files, max: limits.userFiles } });
      if (room.length === 0) return undefined;
      const tightest = room.reduce((a, b) => (b.bytes < a.bytes ? b : a));
      return { ...tightest, bytes: Math.max(0, tightest.bytes) };
    },
    refuse,
    refund: (charge) => (applies(charge.tenant) ? refund(charge) : Promise.resolve()),
    today: () => utcDay(now()),
    counters,
    stale: () => stale,
  };
}
