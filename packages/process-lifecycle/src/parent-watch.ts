/**
 * For a process started by a parent it must not outlive (a shard or router under `expertmesh up` or
 * `serve --shards`): when the parent's IPC channel closes — the parent exited, however it died, even
 * by kill -9 — this process gets SIGTERM, so it drains as on any shutdown; if it has not exited
 * `graceMs` later, it exits anyway. Without an IPC channel (started by hand, systemd) it does nothing.
 */
export function exitWithParent(graceMs = 15_000): void {
  const channel = process.channel;
  if (!channel) return;
  // The channel must not keep this process alive, nor be used for anything but this.
  channel.unref();
  process.once('disconnect', () => {
    process.stderr.write(`[${process.pid}] parent process gone: shutting down\n`);
    setTimeout(() => process.exit(1), graceMs).unref();
    process.kill(process.pid, 'SIGTERM');
  });
}
