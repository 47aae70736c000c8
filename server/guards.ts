// Assembles the abuse protection from config: whose requests count (abuse.ts), the IP lists and their reload,
// the rate limits, active Fail2Ban bans, the nginx log follower and upload admission. The app mounts the
// middlewares; everything keeps counters for the metrics.
import type { RequestHandler } from 'express';
import type { Redis } from 'ioredis';
import { abuseEvents, subjects, type AbuseEvents, type AbuseListener } from './abuse.js';
import { addressMatcher } from './address-list.js';
import { createAdmission, type Admission } from './admission.js';
import { ConfigError, loadConfig, type Config } from './config.js';
import { createBanner, type Banner } from './fail2ban.js';
import { IpLists } from './ip-lists.js';
import type { Logger } from './logger.js';
import { followNginxLog, type NginxLogFollower } from './nginx-log.js';
import { createRateLimit, type RateLimit } from './rate-limit.js';
import { ipFilter, type IpFilterCounters } from '../middleware/ip-filter.js';

export interface Guards {
  /** Where refusals are reported (attached to every request). */
  events: AbuseEvents;
  /** In order: the IP lists, then the rate limit; only those switched on. */
  middlewares: RequestHandler[];
  admission: Admission;
  /** Re-reads AllowedIPs and BlockedIPs from the config file; false (and the old lists kept) if it does not validate. */
  reloadLists(): Promise<boolean>;
  counters: {
    ipFilter: IpFilterCounters;
    rateLimit?: RateLimit['counters'];
    bans?: Banner['counters'];
    nginxLog?: NginxLogFollower['counters'];
    admission: Admission['counters'];
  };
  close(): Promise<void>;
}

export interface GuardDeps {
  config: Config;
  logger: Logger;
  redis?: Redis;
  /** The file the config came from, for reloading the IP lists; none in tests that build a Config directly. */
  configFile?: string;
}

export function createGuards({ config, logger, redis, configFile }: GuardDeps): Guards {
  const who = subjects(addressMatcher(config.TrustedProxies));
  const listeners: AbuseListener[] = [];
  const middlewares: RequestHandler[] = [];

  const lists = new IpLists(config.AllowedIPs, config.BlockedIPs);
  const ipFilterCounters: IpFilterCounters = { blocked: 0 };
  if (config.EnableIPManagement) middlewares.push(ipFilter({ lists, subjects: who, logger, counters: ipFilterCounters }));

  const rateLimit = config.EnableRateLimiting ? createRateLimit({ config, subjects: who, logger, ...(redis ? { redis } : {}) }) : undefined;
  if (rateLimit) {
    middlewares.push(rateLimit.middleware);
    listeners.push(rateLimit.listener);
  }
  const banner = config.Fail2BanEnabled ? createBanner({ config, logger }) : undefined;
  if (banner) listeners.push(banner.listener);

  const events = abuseEvents(who, listeners);
  const follower = config.IPSource === 'nginx-log' ? followNginxLog({ file: config.NginxLogFile, events, logger }) : undefined;
  const admission = createAdmission(config.NumWorkers, config.UploadQueueSize);

  const reloadLists = (): boolean => {
    if (configFile === undefined) return false;
    try {
      const { config: fresh } = loadConfig(configFile);
      lists.update(fresh.AllowedIPs, fresh.BlockedIPs);
      logger.info('ip_lists.reloaded', { allowed: fresh.AllowedIPs.length, blocked: fresh.BlockedIPs.length });
      return true;
    } catch (err) {
      const cause = err instanceof ConfigError ? err.problems.join('; ') : err instanceof Error ? err.message : String(err);
      logger.error('ip_lists.reload_failed', { file: configFile, cause, note: 'the lists in force are kept' });
      return false;
    }
  };
  const timer = config.EnableIPManagement && config.IPCheckInterval > 0 && configFile !== undefined ? setInterval(reloadLists, config.IPCheckInterval).unref() : undefined;

  return {
    events,
    middlewares,
    admission,
    reloadLists: () => Promise.resolve(reloadLists()),
    counters: {
      ipFilter: ipFilterCounters,
      ...(rateLimit ? { rateLimit: rateLimit.counters } : {}),
      ...(banner ? { bans: banner.counters } : {}),
      ...(follower ? { nginxLog: follower.counters } : {}),
      admission: admission.counters,
    },
    close: async () => {
      clearInterval(timer);
      banner?.stop();
      await follower?.stop();
      await rateLimit?.close();
    },
  };
}
