// The quota ledger of a single instance: counts in this process. A check and its charge run in one turn of the
// event loop, so no other upload comes between them; the counts are recounted from the metadata at every start.
import { dayKey, userKey, type Charge, type QuotaLedger, type QuotaLimits, type QuotaTotals, type Refusal, type Usage } from './quotas.js';

export class MemoryQuotaLedger implements QuotaLedger {
  private tenants = new Map<string, Usage>();
  private users = new Map<string, Usage>();
  private days = new Map<string, number>();
  private currentDay = '';

  charge(charge: Charge, limits: QuotaLimits): Promise<Refusal | undefined> {
    // A new day: the earlier days' counts are of no use any more.
    if (charge.day !== undefined && charge.day !== this.currentDay) {
      for (const key of this.days.keys()) if (!key.startsWith(`${charge.day}\u0000`)) this.days.delete(key);
      this.currentDay = charge.day;
    }
    const tenant = this.tenants.get(charge.tenant) ?? { bytes: 0, files: 0 };
    if (limits.tenantBytes > 0 && tenant.bytes + charge.bytes > limits.tenantBytes) return Promise.resolve({ limit: 'tenant-bytes', used: tenant.bytes, max: limits.tenantBytes });
    const key = charge.user !== undefined ? userKey(charge.tenant, charge.user) : undefined;
    const user = (key && this.users.get(key)) || { bytes: 0, files: 0 };
    const day = charge.user !== undefined && charge.day !== undefined ? dayKey(charge.tenant, charge.user, charge.day) : undefined;
    const today = (day && this.days.get(day)) || 0;
    if (key) {
      if (limits.userBytes > 0 && user.bytes + charge.bytes > limits.userBytes) return Promise.resolve({ limit: 'user-bytes', used: user.bytes, max: limits.userBytes });
      if (limits.userFiles > 0 && user.files + charge.files > limits.userFiles) return Promise.resolve({ limit: 'user-files', used: user.files, max: limits.userFiles });
      if (day && limits.userDailyBytes > 0 && today + charge.bytes > limits.userDailyBytes) return Promise.resolve({ limit: 'user-day', used: today, max: limits.userDailyBytes });
    }
    this.tenants.set(charge.tenant, { bytes: tenant.bytes + charge.bytes, files: tenant.files + charge.files });
    if (key) this.users.set(key, { bytes: user.bytes + charge.bytes, files: user.files + charge.files });
    if (day) this.days.set(day, today + charge.bytes);
    return Promise.resolve(undefined);
  }

  refund(charge: Charge): Promise<void> {
    const tenant = this.tenants.get(charge.tenant);
    if (tenant) this.tenants.set(charge.tenant, { bytes: Math.max(0, tenant.bytes - charge.bytes), files: Math.max(0, tenant.files - charge.files) });
    if (charge.user !== undefined) {
      const key = userKey(charge.tenant, charge.user);
      const user = this.users.get(key);
      if (user) this.users.set(key, { bytes: Math.max(0, user.bytes - charge.bytes), files: Math.max(0, user.files - charge.files) });
      if (charge.day !== undefined) {
        const day = dayKey(charge.tenant, charge.user, charge.day);
        this.days.set(day, Math.max(0, (this.days.get(day) ?? 0) - charge.bytes));
      }
    }
    return Promise.resolve();
  }

  usage(tenant: string, user?: string, day?: string): Promise<Usage & { today: number }> {
    const counted = user !== undefined ? this.users.get(userKey(tenant, user)) : this.tenants.get(tenant);
    const today = user !== undefined && day !== undefined ? (this.days.get(dayKey(tenant, user, day)) ?? 0) : 0;
    return Promise.resolve({ bytes: counted?.bytes ?? 0, files: counted?.files ?? 0, today });
  }

  replace(totals: QuotaTotals): Promise<void> {
    this.tenants = new Map(totals.tenants);
    this.users = new Map(totals.users);
    this.days = new Map(totals.days);
    return Promise.resolve();
  }
}
