import type { ProtobufTypeDefinition } from '@grpc/proto-loader';
import { messageFields } from '../src/message-parts.js';

/** Whether a decoded field holds something other than its proto3 default (decoded with `defaults: true`, every field is present). */
function isSet(v: unknown): boolean {
  if (v === null || v === undefined || v === 0 || v === '' || v === false) return false;
  if (typeof v === 'string') return !v.endsWith('_UNSPECIFIED');
  if (v instanceof Uint8Array || Array.isArray(v)) return v.length > 0;
  if (typeof v === 'object') return Object.keys(v).length > 0;
  return true;
}

/**
 * The fields of `definition`'s message (as loaded from the .proto) that `decoded` leaves at their default: a test
 * whose case must set every field fails on a field added to the .proto until the case sets it too.
 */
export function unsetFields(definition: ProtobufTypeDefinition, decoded: object, except: readonly string[] = []): string[] {
  const fields = messageFields(definition).map((f) => f.name);
  if (fields.length === 0) throw new Error('a message without fields: not the loaded descriptor');
  return fields.filter((name) => !except.includes(name) && !isSet((decoded as Record<string, unknown>)[name]));
}
