/**
 * Real loopback servers that misbehave the way broken registries and token servers do: one that accepts
 * connections and never says a word, and an HTTP server whose handler can answer slowly or trickle bytes.
 */
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createTcpServer, type AddressInfo, type Server, type Socket } from 'node:net';

/** A running test server on 127.0.0.1. */
export interface HostileServer {
  /** `127.0.0.1:PORT` */
  readonly host: string;
  /** Connections accepted so far. */
  readonly connections: number;
  stop(): Promise<void>;
}

async function listen(server: Server, sockets: Set<Socket>): Promise<HostileServer> {
  let connections = 0;
  server.on('connection', (s: Socket) => {
    connections++;
    sockets.add(s);
    s.on('error', () => undefined);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    host,
    get connections() {
      return connections;
    },
    stop: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** A TCP server handing each connection to `onSocket` (raw bytes, for broken HTTP). */
export function startTcpServer(onSocket: (socket: Socket) => void): Promise<HostileServer> {
  const sockets = new Set<Socket>();
  return listen(createTcpServer(onSocket), sockets);
}

/** Accepts TCP connections, reads whatever is sent, and never answers (neither HTTP nor TLS). */
export function startSilentServer(): Promise<HostileServer> {
  return startTcpServer((s) => s.resume());
}

/** An HTTP server whose every request goes to `handler`; its sockets are destroyed on stop. */
export function startHttpServer(
  handler: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<HostileServer> {
  const sockets = new Set<Socket>();
  const server = createHttpServer(handler);
  return listen(server, sockets);
}

/**
 * Writes `bytes` to `res` one byte every `everyMs`, stopping when the connection goes away. Returns at once; the
 * response never ends by itself unless all bytes were sent.
 */
export function trickle(res: ServerResponse | Socket, bytes: Buffer, everyMs: number): void {
  let i = 0;
  const timer = setInterval(() => {
    if (res.destroyed || i >= bytes.length) {
      clearInterval(timer);
      if (!res.destroyed) res.end();
      return;
    }
    res.write(bytes.subarray(i, i + 1));
    i++;
  }, everyMs);
  res.on('close', () => clearInterval(timer));
}
