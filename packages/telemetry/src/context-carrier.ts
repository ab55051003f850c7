import { context, propagation, type Context } from '@opentelemetry/api';

/**
 * W3C trace context in a plain string map: carried in each gRPC request message (a stream's
 * metadata is sent once per stream, but every request on it belongs to another step) and in HTTP
 * headers. grpc-js's automatic instrumentation does not hook ES modules, so this is done by hand.
 */
export function injectContext(ctx: Context = context.active()): Record<string, string> {
  const carrier: Record<string, string> = {};
  propagation.inject(ctx, carrier);
  return carrier;
}

export function extractContext(carrier: Readonly<Record<string, string | string[] | undefined>>): Context {
  return propagation.extract(context.active(), carrier, {
    keys: (c) => Object.keys(c),
    get: (c, key) => {
      const v = c[key];
      return Array.isArray(v) ? v[0] : v;
    },
  });
}
