// IP management (EnableIPManagement): AllowedIPs and BlockedIPs as address lists, replaceable while the server
// runs (IPCheckInterval, SIGHUP). A blocked address wins over an allowed one.
import { addressMatcher, type AddressMatcher } from './address-list.js';

export type IpVerdict = 'blocked' | 'not_allowed' | undefined;

export class IpLists {
  private allowed: AddressMatcher;
  private blocked: AddressMatcher;

  constructor(allowed: readonly string[], blocked: readonly string[]) {
    this.allowed = addressMatcher(allowed);
    this.blocked = addressMatcher(blocked);
  }

  /** Takes new lists; both are replaced together, so no request sees one old and one new. */
  update(allowed: readonly string[], blocked: readonly string[]): void {
    const next = { allowed: addressMatcher(allowed), blocked: addressMatcher(blocked) };
    this.allowed = next.allowed;
    this.blocked = next.blocked;
  }

  verdict(ip: string): IpVerdict {
    if (this.blocked(ip)) return 'blocked';
    return this.allowed(ip) ? undefined : 'not_allowed';
  }
}
