// Address lists from config (TrustedProxies and the like): CIDRs and single addresses, IPv4 and IPv6, in a
// net.BlockList. An IPv4-mapped IPv6 peer (::ffff:192.0.2.1, what a dual-stack socket reports) is matched
// against the IPv4 ranges too.
import net from 'node:net';

export type AddressMatcher = (ip: string) => boolean;

export function addressMatcher(cidrs: readonly string[]): AddressMatcher {
  const list = new net.BlockList();
  for (const entry of cidrs) {
    const [address = '', bits] = entry.split('/');
    const family = net.isIPv6(address) ? 'ipv6' : 'ipv4';
    if (bits === undefined) list.addAddress(address, family);
    else list.addSubnet(address, Number(bits), family);
  }
  return (ip) => {
    const family = net.isIP(ip);
    if (family === 0) return false;
    if (family === 6) {
      const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
      if (mapped && list.check(mapped[1]!, 'ipv4')) return true;
      return list.check(ip, 'ipv6');
    }
    return list.check(ip, 'ipv4');
  };
}
