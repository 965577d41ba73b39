/**
 * The node-local, read-only mirror endpoint (`--listen`): `startMirrorServer` over the node store with one upstream
 * per registry the spec routes (the cluster mirror, else the registry itself), serving upstream names only. The
 * server's upstream table is fixed at start, so a changed table restarts it on the same port (a pull in flight is
 * cut; containerd falls through to the next host and retries).
 */
import type { Logger } from 'pino';
import type { ContentStore } from '../engine/store/types.js';
import { jsonEqual } from '../kube/json.js';
import { startMirrorServer, type MirrorServer } from '../mirror/mirror-server.js';
import type { UpstreamConfig } from '../mirror/upstreams.js';

/** Options of {@link LocalMirror}. */
export interface LocalMirrorOptions {
  readonly store: ContentStore;
  readonly host: string;
  /** 0: pick a free port at the first start, then keep it. */
  readonly port: number;
  readonly logger?: Logger;
}

/** The node-local endpoint, restarted when its upstreams change. */
export class LocalMirror {
  private server: MirrorServer | undefined;
  private upstreams: readonly UpstreamConfig[] | undefined;
  private port: number;

  constructor(private readonly options: LocalMirrorOptions) {
    this.port = options.port;
  }

  /** `http://host:port` once started. */
  get url(): string {
    if (!this.server) throw new Error('the node-local mirror is not started');
    return this.server.url;
  }

  /** The running server (for its metrics and backend). */
  get current(): MirrorServer | undefined {
    return this.server;
  }

  /** Starts or restarts the endpoint with `upstreams` (nothing happens when they are the same). */
  async configure(upstreams: readonly UpstreamConfig[]): Promise<void> {
    if (this.server && jsonEqual(upstreams, this.upstreams)) return;
    if (this.server) {
      this.options.logger?.info(
        { upstreams: upstreams.map((u) => u.name) },
        'node-local mirror: upstreams changed, restarting',
      );
      await this.server.close();
      this.server = undefined;
    }
    this.server = await startMirrorServer({
      store: this.options.store,
      upstreams,
      ...(upstreams.some((u) => u.name === 'docker.io') ? { defaultUpstream: 'docker.io' } : {}),
      upstreamsOnly: true,
      host: this.options.host,
      port: this.port,
      ...(this.options.logger ? { logger: this.options.logger } : {}),
    });
    this.port = this.server.port;
    this.upstreams = upstreams;
  }

  async close(): Promise<void> {
    await this.server?.close();
    this.server = undefined;
  }
}
