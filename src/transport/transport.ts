import type { NodeId, RequestMessage, ResponseMessage } from '../raft/types.js';

/** Which internal endpoint a batch goes to. */
export type RaftEndpoint = 'request_vote' | 'append_entries' | 'install_snapshot';

export function endpointOf(msg: RequestMessage): RaftEndpoint {
  switch (msg.type) {
    case 'vote':
      return 'request_vote';
    case 'snapshot':
      return 'install_snapshot';
    case 'append':
    case 'timeout_now':
      return 'append_entries';
  }
}

/**
 * Node-to-node delivery of Raft requests. One call is one HTTP POST to `endpoint` on node `to`
 * carrying a batch of requests (body `{messages:[...]}`, all for that endpoint, in order); the
 * responses the receiver produced for them come back in the HTTP response body. Tests wrap it to
 * drop, delay or partition traffic.
 */
export interface Transport {
  send(
    to: NodeId,
    endpoint: RaftEndpoint,
    msgs: RequestMessage[],
    timeoutMs: number,
  ): Promise<ResponseMessage[]>;
  close(): Promise<void>;
}

/** Connection failures that prove a request never reached the peer: trying elsewhere is safe. */
const NEVER_SENT = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_CONNECT_TIMEOUT']);

/**
 * True when an HTTP call to a peer failed before the peer could have seen the request; any other
 * failure after sending leaves its outcome unknown.
 */
export function neverReachedPeer(e: unknown): boolean {
  return NEVER_SENT.has((e as { code?: unknown } | null)?.code as string);
}

/** Where each node of the cluster listens. */
export interface PeerAddress {
  id: NodeId;
  url: string;
}
