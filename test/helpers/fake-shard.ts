import * as grpc from '@grpc/grpc-js';
import { expertmeshV1, type ExpertShardServiceHandlers, type GetShardInfoResponse, type RunExpertsRequest__Output, type RunExpertsResponse } from '@expertmesh/wire';

/**
 * A gRPC server that speaks the shard protocol with answers the test chooses: an impostor or a
 * faulty shard, to see what a router does with it. `info` may be a function, to answer GetShardInfo
 * when the test lets it.
 */
export async function startFakeShard(
  info: GetShardInfoResponse | (() => Promise<GetShardInfoResponse>),
  answer: (req: RunExpertsRequest__Output) => RunExpertsResponse,
  credentials: grpc.ServerCredentials = grpc.ServerCredentials.createInsecure(),
): Promise<{ address: string; calls: () => number; infoCalls: () => number; stop: () => Promise<void> }> {
  let calls = 0;
  let infoCalls = 0;
  const server = new grpc.Server();
  const handlers: ExpertShardServiceHandlers = {
    GetShardInfo: (_call, callback) => {
      infoCalls++;
      if (typeof info !== 'function') return callback(null, info);
      info().then((answer) => callback(null, answer), (e: Error) => callback(e));
    },
    RunExperts: (call, callback) => {
      calls++;
      callback(null, answer(call.request));
    },
    RunExpertsStream: (call) => {
      call.on('data', (req: RunExpertsRequest__Output) => {
        calls++;
        call.write({ requestId: req.requestId, response: answer(req) });
      });
      call.on('end', () => call.end());
      call.on('error', () => undefined);
    },
  };
  server.addService(expertmeshV1().ExpertShardService.service, handlers);
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', credentials, (e, p) => (e ? reject(e) : resolve(p))));
  return { address: `127.0.0.1:${port}`, calls: () => calls, infoCalls: () => infoCalls, stop: () => new Promise((r) => server.tryShutdown(() => r())) };
}
