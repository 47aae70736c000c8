// Quotas of tus uploads. An upload whose length is known at creation is charged then, before any byte; one
// charged later (a deferred length, a concatenation's final upload) at its commit. Either way the tus record
// says so (CHARGED_KEY, the UTC day of the charge), so that removing an upload that was never committed (a
// DELETE, the expiry sweep, a refused commit) gives the charge back, and a recount finds uploads in progress.
import type { Upload } from '@tus/utils';
import type { Charge } from '../server/quotas.js';
import { TusRecords } from '../stores/tus-records.js';
import { CHARGED_KEY, COMMITTED_KEY, OWNER_KEY } from './tus-hooks.js';

/** The charge an upload holds while it is not committed; undefined when it holds none. */
export function pendingCharge(record: Upload, tenant: string): Charge | undefined {
  const day = record.metadata?.[CHARGED_KEY];
  if (!day || record.metadata?.[COMMITTED_KEY] || record.size === undefined) return undefined;
  const user = record.metadata?.[OWNER_KEY];
  return { tenant, ...(user ? { user } : {}), bytes: record.size, files: 1, day };
}

/** The charges of every upload in progress under dir (the tus folder), for a recount. */
export async function pendingCharges(dir: string, tenant: string): Promise<Charge[]> {
  const records = new TusRecords(dir);
  const charges: Charge[] = [];
  for (const id of await records.list().catch(() => [])) {
    const record = await records.get(id).catch(() => undefined);
    const charge = record ? pendingCharge(record, tenant) : undefined;
    if (charge) charges.push(charge);
  }
  return charges;
}
