export * from './containers.js';
export * from './record.js';
