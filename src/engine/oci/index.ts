export * from './digest.js';
export * from './media-types.js';
export * from './platform.js';
export * from './reference.js';
export * from './types.js';
