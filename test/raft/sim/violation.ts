// The error every simulated invariant check throws; the cluster decorates it with the seed, a
// replay command and the tail of the event trace before it reaches the test runner.

export class InvariantViolation extends Error {
  constructor(
    readonly invariant: string,
    readonly detail: string,
  ) {
    super(`${invariant}: ${detail}`);
    this.name = 'InvariantViolation';
  }
}

export function violation(invariant: string, detail: string): never {
  throw new InvariantViolation(invariant, detail);
}
