// The quota ledger shared by several instances, in Redis:
//
//   hfs:quota:t:<tenant>                 HASH bytes, files   everything stored in the tenant
//   hfs:quota:u:<tenant>:<user>          HASH bytes, files   one user's files
//   hfs:quota:d:<day>:<tenant>:<user>    STRING bytes        what the user uploaded that UTC day (kept 2 days)
//   hfs:quota:ready                      "1" once counted    absent (Redis restarted empty, keys deleted): recount
//
// A charge is one Lua script, so its checks and its increments are one step for every instance at once.
import type { Redis } from 'ioredis';
import type { Charge, QuotaLedger, QuotaLimits, QuotaTotals, Refusal, Usage } from './quotas.js';

const PREFIX = 'hfs:quota:';
const READY = `${PREFIX}ready`;
const DAY_SECONDS = 2 * 86_400;

const tenantKey = (tenant: string) => `${PREFIX}t:${tenant}`;
const userKeyOf = (tenant: string, user: string) => `${PREFIX}u:${tenant}:${user}`;
const dayKeyOf = (day: string, tenant: string, user: string) => `${PREFIX}d:${day}:${tenant}:${user}`;

// KEYS: tenant, user, day (the last two unused unless ARGV[7] / ARGV[8] say "1").
// ARGV: bytes, files, max tenant bytes, max user bytes, max user files, max day bytes, has user, has day.
const CHARGE = `
local bytes, files = tonumber(ARGV[1]), tonumber(ARGV[2])
local function num(v) return tonumber(v or '0') or 0 end
local tb = num(redis.call('HGET', KEYS[1], 'bytes'))
if tonumber(ARGV[3]) > 0 and tb + bytes > tonumber(ARGV[3]) then return {'tenant-bytes', tb, ARGV[3]} end
if ARGV[7] == '1' then
  local ub = num(redis.call('HGET', KEYS[2], 'bytes'))
  local uf = num(redis.call('HGET', KEYS[2], 'files'))
  if tonumber(ARGV[4]) > 0 and ub + bytes > tonumber(ARGV[4]) then return {'user-bytes', ub, ARGV[4]} end
  if tonumber(ARGV[5]) > 0 and uf + files > tonumber(ARGV[5]) then return {'user-files', uf, ARGV[5]} end
  if ARGV[8] == '1' then
    local d = num(redis.call('GET', KEYS[3]))
    if tonumber(ARGV[6]) > 0 and d + bytes > tonumber(ARGV[6]) then return {'user-day', d, ARGV[6]} end
  end
end
redis.call('HINCRBY', KEYS[1], 'bytes', bytes)
redis.call('HINCRBY', KEYS[1], 'files', files)
if ARGV[7] == '1' then
  redis.call('HINCRBY', KEYS[2], 'bytes', bytes)
  redis.call('HINCRBY', KEYS[2], 'files', files)
  if ARGV[8] == '1' then
    redis.call('INCRBY', KEYS[3], bytes)
    redis.call('EXPIRE', KEYS[3], ${DAY_SECONDS})
  end
end
return {}
`;

// The same keys and flags; counts never go below 0 (a refund after a recount that no longer had the charge).
const REFUND = `
local bytes, files = tonumber(ARGV[1]), tonumber(ARGV[2])
local function down(key, field, by)
  local left = redis.call('HINCRBY', key, field, -by)
  if left < 0 then redis.call('HSET', key, field, 0) end
end
down(KEYS[1], 'bytes', bytes)
down(KEYS[1], 'files', files)
if ARGV[3] == '1' then
  down(KEYS[2], 'bytes', bytes)
  down(KEYS[2], 'files', files)
  if ARGV[4] == '1' then
    local left = redis.call('DECRBY', KEYS[3], bytes)
    if left < 0 then redis.call('SET', KEYS[3], 0) end
    redis.call('EXPIRE', KEYS[3], ${DAY_SECONDS})
  end
end
return 1
`;

function keysOf(charge: Charge): [string, string, string] {
  const user = charge.user ?? '';
  return [tenantKey(charge.tenant), userKeyOf(charge.tenant, user), dayKeyOf(charge.day ?? '', charge.tenant, user)];
}

export class RedisQuotaLedger implements QuotaLedger {
  constructor(private readonly redis: Redis) {}

  async charge(charge: Charge, limits: QuotaLimits): Promise<Refusal | undefined> {
    const hasUser = charge.user !== undefined ? '1' : '0';
    const hasDay = charge.user !== undefined && charge.day !== undefined ? '1' : '0';
    const answer = (await this.redis.eval(CHARGE, 3, ...keysOf(charge), charge.bytes, charge.files, limits.tenantBytes, limits.userBytes, limits.userFiles, limits.userDailyBytes, hasUser, hasDay)) as Array<string | number>;
    if (answer.length === 0) return undefined;
    return { limit: answer[0] as Refusal['limit'], used: Number(answer[1]), max: Number(answer[2]) };
  }

  async refund(charge: Charge): Promise<void> {
    const hasUser = charge.user !== undefined ? '1' : '0';
    const hasDay = charge.user !== undefined && charge.day !== undefined ? '1' : '0';
    await this.redis.eval(REFUND, 3, ...keysOf(charge), charge.bytes, charge.files, hasUser, hasDay);
  }

  async usage(tenant: string, user?: string, day?: string): Promise<Usage & { today: number }> {
    const counted = await this.redis.hgetall(user !== undefined ? userKeyOf(tenant, user) : tenantKey(tenant));
    const today = user !== undefined && day !== undefined ? Number((await this.redis.get(dayKeyOf(day, tenant, user))) ?? 0) : 0;
    return { bytes: Number(counted.bytes ?? 0), files: Number(counted.files ?? 0), today };
  }

  /** Whether the counts are there (a recount is due when not). */
  async ready(): Promise<boolean> {
    return (await this.redis.exists(READY)) === 1;
  }

  async replace(totals: QuotaTotals): Promise<void> {
    const stale: string[] = [];
    let cursor = '0';
    do {
      const [next, keys] = await this.redis.scan(cursor, 'MATCH', `${PREFIX}*`, 'COUNT', 1000);
      stale.push(...keys);
      cursor = next;
    } while (cursor !== '0');
    const write = this.redis.multi();
    if (stale.length > 0) write.del(...stale);
    for (const [tenant, usage] of totals.tenants) write.hset(tenantKey(tenant), 'bytes', usage.bytes, 'files', usage.files);
    for (const [key, usage] of totals.users) {
      const [tenant, user] = key.split('\u0000') as [string, string];
      write.hset(userKeyOf(tenant, user), 'bytes', usage.bytes, 'files', usage.files);
    }
    for (const [key, bytes] of totals.days) {
      const [day, tenant, user] = key.split('\u0000') as [string, string, string];
      write.set(dayKeyOf(day, tenant, user), bytes, 'EX', DAY_SECONDS);
    }
    write.set(READY, '1');
    const results = (await write.exec()) ?? [];
    for (const [err] of results) if (err) throw err;
  }
}
