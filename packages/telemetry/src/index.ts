export { startTracing, tracer, tracingRequested, TRACER_NAME } from './tracing.js';
export type { TracingHandle, ProcessRole } from './tracing.js';
export { injectContext, extractContext } from './context-carrier.js';
export { RouterMetrics } from './router-metrics.js';
export { ShardMetrics } from './shard-metrics.js';
export { serveMetrics } from './metrics-endpoint.js';
export { prometheusText } from './prometheus-text.js';
export { RebalanceMetrics, WINDOW_METRIC, TOTAL_METRIC } from './rebalance-metrics.js';
