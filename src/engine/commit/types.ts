/** Value types of the commit room: file metadata, change records and the container record it reads. */
/** The kind of a filesystem object, as a layer tar can carry it (sockets are never written). */
export type FileType = 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo' | 'socket';

/** What a layer entry records about a file. Immutable; built by {@link fileInfoFromStat} or by hand in tests. */
export interface FileInfo {
  readonly type: FileType;
  /** Permission bits including setuid, setgid and sticky (`mode & 0o7777`). */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  /** Size in bytes of a regular file; 0 for everything else. */
  readonly size: number;
  /** Modification time, whole seconds since the epoch. */
  readonly mtimeSec: number;
  /** Nanoseconds part of the modification time (0 when the filesystem or a tar lost it). */
  readonly mtimeNsec: number;
  /** Target of a symlink. */
  readonly linkname?: string;
  /** Device numbers of char/block devices. */
  readonly devMajor?: number;
  readonly devMinor?: number;
  /** Identity for hardlink detection (same dev+ino twice in one layer → a hardlink entry). */
  readonly dev?: bigint;
  readonly ino?: bigint;
  readonly nlink?: number;
  /** Extended attributes to record (overlay-private ones already removed). */
  readonly xattrs?: Readonly<Record<string, Buffer>>;
}

/** What happened to a path between the lower tree and the container's writable layer. */
export type ChangeKind = 'add' | 'modify' | 'delete' | 'opaque';

/**
 * One change of a container. `path` is relative to the root, `/`-separated, without leading `./` or `/`
 * (`etc/passwd`). `add`/`modify` carry the new `info` and, for regular files, the absolute `source` to read the
 * content from; `delete` becomes a `.wh.NAME` whiteout; `opaque` becomes `PATH/.wh..wh..opq` (the directory's own
 * entry is a separate add/modify change).
 */
export interface Change {
  readonly kind: ChangeKind;
  readonly path: string;
  readonly info?: FileInfo;
  readonly source?: string;
}

/** The container record this room reads (the container room's contract). */
export type { ContainerRecord } from '../container/record.js';
