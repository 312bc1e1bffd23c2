// A time limit for one outgoing HTTP call, disarmed when the call is over. AbortSignal.timeout's
// timer cannot be cleared: it stays armed for the whole limit after the answer came, so a caller
// making thousands of calls a second keeps tens of thousands of timers and signals alive at once.
// In the lock benchmark's load generator that cost about a fifth of the throughput (one A/B run).

export interface Deadline {
  readonly signal: AbortSignal;
  /** Disarm the timer; call it once the answer (body included) has been read or the call failed. */
  clear(): void;
}

/** What AbortSignal.timeout aborts with, so callers tell a timeout apart the same way. */
export function timeoutError(): DOMException {
  return new DOMException('The operation was aborted due to timeout', 'TimeoutError');
}

export function deadline(ms: number, reason: () => unknown = timeoutError): Deadline {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(reason()), ms);
  // As with AbortSignal.timeout, a pending limit alone does not keep the process alive.
  timer.unref();
  return { signal: controller.signal, clear: () => clearTimeout(timer) };
}
