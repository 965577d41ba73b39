/**
 * Bounds the open connections of an HTTP server without locking out real clients: past the limit, the connection
 * idle the longest (no request in flight, e.g. a keep-alive socket or one that never sent a full request) is closed
 * to make room; only when every connection is busy is the new one refused. Connections idle longer than the idle
 * timeout are closed as well, so thousands of idle sockets cannot pin memory or file descriptors.
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import type { Socket } from 'node:net';

/** Options of {@link limitConnections}. */
export interface ConnectionLimitOptions {
  /** At most this many connections are open at once. */
  readonly maxConnections: number;
  /** A connection with no request in flight for this long is closed (ms). */
  readonly idleTimeoutMs: number;
  /** Told when a connection is closed or refused to keep the bounds. */
  readonly onShed?: (reason: 'evicted-idle' | 'refused-busy' | 'idle-timeout') => void;
}

/** The accounting kept for one connection. */
interface ConnState {
  inFlight: number;
  idleSince: number;
}

/** A handle on the installed limits. */
export interface ConnectionLimits {
  /** Connections currently open. */
  readonly open: number;
  /** Stops the idle sweep (the server's close does the rest). */
  stop(): void;
}

/** Installs the connection bound and idle sweep on `server`; call before it starts listening. */
export function limitConnections(
  server: Server | HttpsServer,
  options: ConnectionLimitOptions,
): ConnectionLimits {
  // Insertion order = idle order: a connection that turns idle is moved to the end, so the first idle entry is
  // the one idle the longest.
  const conns = new Map<Socket, ConnState>();
  // Over TLS a request's socket is the TLS socket, not the accepted TCP one: matched by the peer's address.
  const byPeer = new Map<string, Socket>();
  const shed = options.onShed ?? (() => undefined);

  server.on('connection', (socket: Socket) => {
    if (conns.size >= options.maxConnections) {
      const victim = oldestIdle(conns);
      if (!victim) {
        shed('refused-busy');
        socket.destroy();
        return;
      }
      shed('evicted-idle');
      conns.delete(victim);
      victim.destroy();
    }
    conns.set(socket, { inFlight: 0, idleSince: performance.now() });
    const peer = peerOf(socket);
    if (peer) byPeer.set(peer, socket);
    socket.once('close', () => {
      conns.delete(socket);
      if (peer && byPeer.get(peer) === socket) byPeer.delete(peer);
    });
  });

  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const found = conns.has(req.socket) ? req.socket : byPeer.get(peerOf(req.socket) ?? '');
    const state = found && conns.get(found);
    if (!found || !state) return;
    const socket: Socket = found;
    state.inFlight++;
    res.once('close', () => {
      state.inFlight--;
      if (state.inFlight === 0 && conns.has(socket)) {
        state.idleSince = performance.now();
        conns.delete(socket);
        conns.set(socket, state);
      }
    });
  });

  const sweeper = setInterval(
    () => {
      const limit = performance.now() - options.idleTimeoutMs;
      for (const [socket, state] of conns) {
        if (state.inFlight === 0 && state.idleSince <= limit) {
          shed('idle-timeout');
          conns.delete(socket);
          socket.destroy();
        }
      }
    },
    Math.max(50, Math.min(options.idleTimeoutMs / 2, 5000)),
  );
  sweeper.unref();
  server.once('close', () => clearInterval(sweeper));

  return {
    get open() {
      return conns.size;
    },
    stop: () => clearInterval(sweeper),
  };
}

function peerOf(socket: Socket): string | undefined {
  return socket.remoteAddress === undefined ? undefined : `${socket.remoteAddress}|${socket.remotePort}`;
}

function oldestIdle(conns: Map<Socket, ConnState>): Socket | undefined {
  for (const [socket, state] of conns) if (state.inFlight === 0) return socket;
  return undefined;
}
