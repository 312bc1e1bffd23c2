// A TCP proxy between two nodes, so tests can cut real connections (partitions) without any
// fault-injection hook in production code. `blackhole` accepts and silently swallows traffic, like
// a dead network path (requests time out); `refuse` resets connections at once.
import net from 'node:net';

export type ProxyMode = 'pass' | 'blackhole' | 'refuse';

export class TcpProxy {
  private server: net.Server;
  private sockets = new Set<net.Socket>();
  mode: ProxyMode = 'pass';
  port = 0;

  constructor(private readonly targetPort: number) {
    this.server = net.createServer((client) => this.onConnection(client));
  }

  async listen(port = 0): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, '127.0.0.1', () => resolve());
    });
    this.port = (this.server.address() as net.AddressInfo).port;
    return this.port;
  }

  setMode(mode: ProxyMode): void {
    this.mode = mode;
    if (mode !== 'pass') for (const s of this.sockets) s.destroy();
  }

  private onConnection(client: net.Socket): void {
    this.track(client);
    client.on('error', () => client.destroy());
    if (this.mode === 'refuse') {
      client.resetAndDestroy();
      return;
    }
    if (this.mode === 'blackhole') {
      client.resume(); // swallow
      return;
    }
    const upstream = net.connect(this.targetPort, '127.0.0.1');
    this.track(upstream);
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    client.pipe(upstream);
    upstream.pipe(client);
  }

  private track(s: net.Socket): void {
    this.sockets.add(s);
    s.on('close', () => this.sockets.delete(s));
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/**
 * Ports held open on loopback until `release()`: while held, nothing else in this process (a proxy
 * listening on port 0, a Redis started on freePort()) can be handed the same port.
 */
export async function reservePorts(n: number): Promise<{ ports: number[]; release(): Promise<void> }> {
  const servers: net.Server[] = [];
  for (let i = 0; i < n; i++) {
    const srv = net.createServer();
    await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', () => resolve()));
    servers.push(srv);
  }
  return {
    ports: servers.map((s) => (s.address() as net.AddressInfo).port),
    release: async () => {
      await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
    },
  };
}

/** A free TCP port on loopback (closed again before returning; a small race is acceptable in tests). */
export async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', () => resolve()));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}
