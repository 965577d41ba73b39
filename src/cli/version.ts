/** This release's version (as package.json says; the CLI's `--version` and the default build image's tag). */
export const STRATA_VERSION = '0.1.0';
