/** The agent's Prometheus metrics (`strata_agent_*`), in a registry of its own (prom-client). */
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';

/** Counters and gauges of one agent process. */
export class AgentMetrics {
  readonly registry = new Registry();
  readonly pulledBytes: Counter;
  readonly pulls: Counter<'result'>;
  readonly storeBytes: Gauge;
  readonly evictions: Counter;
  readonly evictedBytes: Counter;
  readonly nodeConfigWrites: Counter<'action'>;
  readonly statusWrites: Counter<'result'>;

  constructor() {
    const registers = [this.registry];
    this.pulledBytes = new Counter({
      name: 'strata_agent_pulled_bytes_total',
      help: 'Bytes of cache content fetched from upstream (the cluster mirror or a registry) into the node store.',
      registers,
    });
    this.pulls = new Counter({
      name: 'strata_agent_pulls_total',
      help: 'Image platforms warmed, by result (ready, failed, budget).',
      labelNames: ['result'],
      registers,
    });
    this.storeBytes = new Gauge({
      name: 'strata_agent_store_bytes',
      help: 'Bytes of content in the node store, as last measured.',
      registers,
    });
    this.evictions = new Counter({
      name: 'strata_agent_evictions_total',
      help: 'Blobs removed from the node store because a cache released them.',
      registers,
    });
    this.evictedBytes = new Counter({
      name: 'strata_agent_evicted_bytes_total',
      help: 'Bytes freed by those removals.',
      registers,
    });
    this.nodeConfigWrites = new Counter({
      name: 'strata_agent_node_config_writes_total',
      help: 'Node configuration files changed, by action (create, update, restore, remove, undo).',
      labelNames: ['action'],
      registers,
    });
    this.statusWrites = new Counter({
      name: 'strata_agent_status_writes_total',
      help: 'StrataNode status patches, by result (ok, error).',
      labelNames: ['result'],
      registers,
    });
    collectDefaultMetrics({ register: this.registry, prefix: 'strata_agent_' });
  }

  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
