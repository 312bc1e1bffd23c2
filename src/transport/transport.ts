import type { NodeId, RequestMessage, ResponseMessage } from '../raft/types.js';

/**
 * Node-to-node delivery of Raft requests. A request travels as one HTTP POST; the responses the
 * receiver produced for it come back in the HTTP response body. Tests wrap it to drop, delay or
 * partition traffic.
 */
export interface Transport {
  /** Deliver `msg` to `msg.to`; resolves with the receiver's responses, rejects on failure or timeout. */
  send(msg: RequestMessage, timeoutMs: number): Promise<ResponseMessage[]>;
  close(): Promise<void>;
}

/** Where each node of the cluster listens. */
export interface PeerAddress {
  id: NodeId;
  url: string;
}
