/** Turns what the user asked for (registries, mirrors) into the files {@link applyNodeConfig} converges. */
import type { PlannedFile } from './apply.js';
import { mergeDaemonJson, mirrorsAdded, removeMirrors } from './daemon-json.js';
import { renderHostsToml, validateRegistryName, type HostsTomlHost } from './hosts-toml.js';

/** Where containerd reads a registry's hosts.toml, relative to its `config_path` (`docker.io/hosts.toml`). */
export function hostsTomlPath(registry: string): string {
  return `${validateRegistryName(registry)}/hosts.toml`;
}

/**
 * One `<registry>/hosts.toml` per registry, each listing `hosts` in order. Rendering happens here, so a bad
 * registry, URL or option throws before anything is written.
 */
export function planHostsTomlFiles(
  registries: readonly string[],
  hosts: readonly HostsTomlHost[],
): PlannedFile[] {
  return [...new Set(registries.map(validateRegistryName))].map((registry) => {
    const content = renderHostsToml({ registry, hosts });
    return { path: hostsTomlPath(registry), render: () => ({ content }) };
  });
}

/**
 * The daemon.json at `fileName` (relative to its directory) with `mirrors` first in `registry-mirrors`. Our own
 * earlier mirrors are taken out before merging, so a changed mirror list replaces ours rather than piling up, and
 * the mirrors added (those the original did not list) are recorded for a surgical restore.
 */
export function planDaemonJsonFile(fileName: string, mirrors: readonly string[]): PlannedFile {
  return {
    path: fileName,
    render(current, previous) {
      const base = previous ? removeMirrors(current, previous.mirrors) : current;
      return {
        content: mergeDaemonJson(base, mirrors),
        undo: { kind: 'daemon-json-mirrors', mirrors: mirrorsAdded(base, mirrors) },
      };
    },
  };
}
