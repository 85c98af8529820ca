/**
 * One error type for the whole project: a gRPC status code, a stable reason and a cause.
 * Converted to a wire status in exactly one place (the server edge, see server.ts).
 */
export enum Code {
  OK = 0,
  CANCELLED = 1,
  UNKNOWN = 2,
  INVALID_ARGUMENT = 3,
  DEADLINE_EXCEEDED = 4,
  NOT_FOUND = 5,
  ALREADY_EXISTS = 6,
  PERMISSION_DENIED = 7,
  RESOURCE_EXHAUSTED = 8,
  FAILED_PRECONDITION = 9,
  ABORTED = 10,
  OUT_OF_RANGE = 11,
  UNIMPLEMENTED = 12,
  INTERNAL = 13,
  UNAVAILABLE = 14,
  DATA_LOSS = 15,
  UNAUTHENTICATED = 16,
}

export class ShimError extends Error {
  readonly code: Code;
  readonly reason: string;

  constructor(code: Code, reason: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ShimError';
    this.code = code;
    this.reason = reason;
  }
}

export const invalidArgument = (reason: string, message: string, cause?: unknown) =>
  new ShimError(Code.INVALID_ARGUMENT, reason, message, { cause });

/** Errors raised by grpc-js clients carry a numeric `code` and a `details` string. */
interface GrpcLikeError {
  code: number;
  details?: string;
  message: string;
}

function isGrpcLike(err: unknown): err is GrpcLikeError {
  return typeof err === 'object' && err !== null && typeof (err as { code?: unknown }).code === 'number';
}

const systemCodes: Record<string, Code> = {
  ENOENT: Code.NOT_FOUND,
  EEXIST: Code.ALREADY_EXISTS,
  EACCES: Code.PERMISSION_DENIED,
  EPERM: Code.PERMISSION_DENIED,
  ENOSPC: Code.RESOURCE_EXHAUSTED,
  ECONNREFUSED: Code.UNAVAILABLE,
  ECONNRESET: Code.UNAVAILABLE,
  EPIPE: Code.UNAVAILABLE,
};

/** Maps any thrown value to a status code and message. */
export function toStatus(err: unknown): { code: Code; message: string } {
  if (err instanceof ShimError) return { code: err.code, message: err.message };
  if (err instanceof Error && err.name === 'AbortError') {
    const reason = (err as Error & { cause?: unknown }).cause;
    if (reason instanceof ShimError) return { code: reason.code, message: reason.message };
    return { code: Code.CANCELLED, message: err.message };
  }
  if (isGrpcLike(err) && err.code >= 0 && err.code <= 16) {
    return { code: err.code as Code, message: err.details ?? err.message };
  }
  if (err instanceof Error) {
    const sys = (err as NodeJS.ErrnoException).code;
    if (typeof sys === 'string' && sys in systemCodes) return { code: systemCodes[sys]!, message: err.message };
    return { code: Code.INTERNAL, message: err.message };
  }
  return { code: Code.INTERNAL, message: String(err) };
}

/** Returns the reason carried by an AbortSignal as an Error. */
export function abortReason(signal: AbortSignal): Error {
  const r: unknown = signal.reason;
  if (r instanceof Error) return r;
  return new ShimError(Code.CANCELLED, 'cancelled', typeof r === 'string' ? r : 'operation cancelled');
}
