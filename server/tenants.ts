// Signing tenants: each URL prefix with the secrets and protocols that may sign uploads under it. The flat
// seed keys (UploadSubDir, Secret, PreviousSecrets) are the default tenant, which accepts every protocol.
import { PROTOCOLS, type Protocol, type TenantConfig } from './config-schema.js';
import type { Config } from './config.js';
import type { QuotaLimits } from './quotas.js';

/** A tenant's quotas: its own keys where it has them, the top-level ones otherwise (0: none). */
function quotasOf(config: Config, tenant?: TenantConfig): QuotaLimits {
  return {
    userBytes: tenant?.MaxBytesPerUser ?? config.MaxBytesPerUser,
    userFiles: tenant?.MaxFilesPerUser ?? config.MaxFilesPerUser,
    userDailyBytes: tenant?.MaxBytesPerUserPerDay ?? config.MaxBytesPerUserPerDay,
    tenantBytes: tenant?.MaxBytesPerTenant ?? config.MaxBytesPerTenant,
  };
}

export interface Tenant {
  /** URL prefix without slashes at either end, e.g. "upload" or "upload/example.org". */
  prefix: string;
  /** The current secret first, then those still accepted during a rotation. */
  secrets: readonly string[];
  protocols: ReadonlySet<Protocol>;
  /** ejabberd layout: the first path segment names the uploader (hex SHA-1 of the bare JID). */
  userDirInPath: boolean;
  quotas: QuotaLimits;
}

/** All tenants, longest prefix first, so a request goes to the most specific one. */
export function tenantsOf(config: Config): Tenant[] {
  const tenants: Tenant[] = [
    { prefix: config.UploadSubDir, secrets: [config.Secret, ...config.PreviousSecrets], protocols: new Set(PROTOCOLS), userDirInPath: false, quotas: quotasOf(config) },
    ...config.Tenants.map((t) => ({
      prefix: t.Prefix,
      secrets: [t.Secret, ...t.PreviousSecrets],
      protocols: new Set(t.Protocols),
      userDirInPath: t.UserDirInPath,
      quotas: quotasOf(config, t),
    })),
  ];
  return tenants.sort((a, b) => b.prefix.split('/').length - a.prefix.split('/').length);
}
