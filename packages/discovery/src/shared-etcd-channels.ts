import * as grpc from '@grpc/grpc-js';

/**
 * grpc options for the etcd3 client that give it one channel (one TCP connection) per etcd endpoint
 * for its whole life. etcd3 closes and recreates its service clients after every recoverable error,
 * and each new client used to open a connection of its own: after an etcd restart a shard held a
 * dozen. Here every client of an endpoint shares one channel, which reconnects by itself (quickly:
 * backoff at most 1 s); closing a client leaves it open, and close() ends them all.
 */
export class SharedEtcdChannels {
  private readonly channels = new Map<string, grpc.Channel>();
  private closed = false;

  /** The `grpcOptions` to give `new Etcd3(...)`. */
  readonly grpcOptions: grpc.ChannelOptions;

  constructor() {
    const factory = (address: string, credentials: grpc.ChannelCredentials, options: grpc.ChannelOptions): grpc.ChannelInterface => this.channelFor(address, credentials, options);
    // grpc-js deletes `channelFactoryOverride` from the options it is given, and etcd3 hands every
    // client the same options object: keep the factory there for the next client.
    this.grpcOptions = new Proxy({ channelFactoryOverride: factory } as grpc.ChannelOptions, { deleteProperty: () => true });
  }

  close(): void {
    this.closed = true;
    for (const channel of this.channels.values()) channel.close();
    this.channels.clear();
  }

  private channelFor(address: string, credentials: grpc.ChannelCredentials, options: grpc.ChannelOptions): grpc.ChannelInterface {
    let channel = this.channels.get(address);
    if (!channel || this.closed) {
      const own = Object.fromEntries(Object.entries(options).filter(([k]) => k !== 'channelFactoryOverride'));
      channel = new grpc.Channel(address, credentials, { ...own, 'grpc.initial_reconnect_backoff_ms': 100, 'grpc.max_reconnect_backoff_ms': 1000 });
      if (!this.closed) this.channels.set(address, channel);
    }
    // A client's close() must not close the channel the others use.
    const shared = channel;
    return new Proxy(shared, { get: (target, prop) => (prop === 'close' ? () => undefined : (Reflect.get(target, prop, target) as unknown)) });
  }
}
