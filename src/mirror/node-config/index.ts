/** Node mirror configuration: containerd hosts.toml, docker daemon.json, and their atomic, undoable application. */
export * from './hosts-toml.js';
export * from './daemon-json.js';
export * from './apply.js';
export * from './plan.js';
