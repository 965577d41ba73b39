// bundle-externals.mjs - the packages the bundle leaves out and loads from node_modules at run time (shared by
// bundle.mjs, which keeps them external, and runtime-deps.mjs, which keeps only them in the image's node_modules).
// pino resolves worker files at run time; it is only loaded when a log line is written.
export const BUNDLE_EXTERNALS = ['pino'];
