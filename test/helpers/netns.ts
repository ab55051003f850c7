import { execFileSync } from 'node:child_process';

/** Network namespaces cannot be made here (not root, no CAP_NET_ADMIN, or no iproute2). */
export class NetnsUnavailableError extends Error {
  override readonly name = 'NetnsUnavailableError';
}

let made = 0;

const ip = (...args: string[]): string => execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

/**
 * A network namespace joined to this one by a veth pair on a /30 of 10.213.0.0/16 that this process
 * makes and removes. cut() drops every packet both ways (blackhole routes), so open TCP connections
 * hang, as across a failed switch, rather than reset; heal() lets them through again.
 */
export class NetworkNamespace {
  private isCut = false;

  private constructor(
    readonly name: string,
    private readonly hostLink: string,
    /** This side's address, and the namespace side's. */
    readonly hostAddress: string,
    readonly address: string,
  ) {}

  static create(): NetworkNamespace {
    const id = `${process.pid % 100_000}${made++}`;
    const name = `em-${id}`;
    const hostLink = `emh${id}`.slice(0, 15);
    const nsLink = `emn${id}`.slice(0, 15);
    const n = (process.pid * 7 + made * 4) % 16_384;
    const base = `10.213.${Math.floor(n / 64)}.${(n % 64) * 4}`;
    const [a, b, c, d] = base.split('.').map(Number) as [number, number, number, number];
    const hostAddress = `${a}.${b}.${c}.${d + 1}`;
    const address = `${a}.${b}.${c}.${d + 2}`;
    try {
      ip('netns', 'add', name);
    } catch (e) {
      throw new NetnsUnavailableError(`cannot create a network namespace (${(e as { stderr?: string }).stderr?.trim() || (e as Error).message}): this test needs root (CAP_NET_ADMIN) and iproute2, as CI has`);
    }
    const ns = new NetworkNamespace(name, hostLink, hostAddress, address);
    try {
      ip('link', 'add', hostLink, 'type', 'veth', 'peer', 'name', nsLink);
      ip('link', 'set', nsLink, 'netns', name);
      ip('addr', 'add', `${hostAddress}/30`, 'dev', hostLink);
      ip('link', 'set', hostLink, 'up');
      ip('-n', name, 'addr', 'add', `${address}/30`, 'dev', nsLink);
      ip('-n', name, 'link', 'set', nsLink, 'up');
      ip('-n', name, 'link', 'set', 'lo', 'up');
    } catch (e) {
      ns.remove();
      throw new NetnsUnavailableError(`cannot wire the namespace ${name}: ${(e as { stderr?: string }).stderr?.trim() || (e as Error).message}`);
    }
    return ns;
  }

  /** Drops all traffic between the two sides, both ways: connections hang, nothing resets. */
  cut(): void {
    if (this.isCut) return;
    ip('route', 'add', 'blackhole', `${this.address}/32`);
    ip('-n', this.name, 'route', 'add', 'blackhole', `${this.hostAddress}/32`);
    this.isCut = true;
  }

  heal(): void {
    if (!this.isCut) return;
    ip('route', 'del', 'blackhole', `${this.address}/32`);
    ip('-n', this.name, 'route', 'del', 'blackhole', `${this.hostAddress}/32`);
    this.isCut = false;
  }

  /** Removes the routes, the veth pair and the namespace (what runs inside should be stopped first). */
  remove(): void {
    const quiet = (...args: string[]): void => {
      try {
        ip(...args);
      } catch {
        // Already gone.
      }
    };
    if (this.isCut) quiet('route', 'del', 'blackhole', `${this.address}/32`);
    this.isCut = false;
    quiet('link', 'del', this.hostLink);
    quiet('netns', 'del', this.name);
  }
}
