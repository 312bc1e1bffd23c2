// Bounds of the queue API (SPEC 5), apart from the schemas so that the CLI can use them without
// loading TypeBox (a few hundred milliseconds at every `dss queue` command's start).

/** Most messages one push or pop may carry. */
export const MAX_BATCH = 1000;
/** SPEC 5: long polls wait at most 30 s. */
export const MAX_POP_WAIT_MS = 30_000;
/** Longest visibility a pop may ask for: 12 hours. */
export const MAX_VISIBILITY_MS = 43_200_000;
