// runtime-deps.mjs - prunes a `npm ci --omit=dev` node_modules to what the bundle loads at run time: the packages
// in BUNDLE_EXTERNALS and their dependencies, resolved from package-lock.json as node resolves them. Everything
// else is inlined in dist/bundle. The Dockerfile's deps stage runs it in the directory holding package-lock.json
// (docs/adr/0027-strata-image.md).
import { existsSync, readFileSync, readdirSync, rmSync, rmdirSync } from 'node:fs';
import { stdout } from 'node:process';
import { BUNDLE_EXTERNALS } from './bundle-externals.mjs';

const packages = JSON.parse(readFileSync('package-lock.json', 'utf8')).packages;

/** The lock path `name` resolves to from the package at `from` ('' is the root): its own node_modules, then up. */
function resolve(from, name) {
  for (let dir = from; ; dir = dir.slice(0, Math.max(0, dir.lastIndexOf('/node_modules/')))) {
    const path = `${dir ? `${dir}/` : ''}node_modules/${name}`;
    if (packages[path]) return path;
    if (!dir) return undefined;
  }
}

const keep = new Set();
const queue = BUNDLE_EXTERNALS.map((name) => ['', name]);
while (queue.length) {
  const [from, name] = queue.shift();
  const path = resolve(from, name);
  if (!path)
    throw new Error(`runtime-deps: ${name} (needed by ${from || 'the bundle'}) is not in package-lock.json`);
  if (keep.has(path)) continue;
  keep.add(path);
  const p = packages[path];
  for (const dep of Object.keys({ ...p.dependencies, ...p.optionalDependencies })) queue.push([path, dep]);
}

// A package not kept goes with its own nested node_modules: nothing below it can be kept (only it resolves them).
for (const path of Object.keys(packages))
  if (path.startsWith('node_modules/') && !keep.has(path) && existsSync(path))
    rmSync(path, { recursive: true, force: true });
rmSync('node_modules/.bin', { recursive: true, force: true });
for (const scope of readdirSync('node_modules').filter((d) => d.startsWith('@')))
  if (readdirSync(`node_modules/${scope}`).length === 0) rmdirSync(`node_modules/${scope}`);
stdout.write(`runtime-deps: kept ${keep.size} packages: ${[...keep].map((p) => p.slice(13)).join(' ')}\n`);
