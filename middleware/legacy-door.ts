// Routes the legacy door on the decoded path: the whole URL path is percent-decoded once, then the most
// specific tenant prefix takes it. Routing on the raw path would let "/upload/a%2Eexample.org/…" reach the
// default tenant and yet write into tenant a.example.org's tree with the default tenant's secret.
import type { Request, RequestHandler, Router } from 'express';
import { decodeUrlPath, type FileLayout } from '../stores/file-layout.js';
import { note } from './request-notes.js';

export interface LegacyDoorTenant {
  layout: FileLayout;
  router: Router;
}

const SLOT = Symbol('slot path');

/** The validated slot path below the tenant prefix that took the request. */
export function slotPathOf(req: Request): string {
  const slot = (req as { [SLOT]?: string })[SLOT];
  if (slot === undefined) throw new Error('legacy router reached without the legacy door');
  return slot;
}

/** tenants: longest prefix first. */
export function legacyDoor(tenants: readonly LegacyDoorTenant[]): RequestHandler {
  return (req, res, next) => {
    const decoded = decodeUrlPath(req.path).slice(1);
    for (const { layout, router } of tenants) {
      const { prefix } = layout;
      if (!decoded.startsWith(`${prefix}/`)) continue;
      const rest = decoded.slice(prefix.length + 1);
      if (rest === '') return next();
      note(req, { door: 'legacy', tenant: prefix });
      (req as { [SLOT]?: string })[SLOT] = layout.claim(rest);
      return router(req, res, next);
    }
    next();
  };
}
