/** An API error: the HTTP status and API.md's `{"error": {code, message}}` body. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  /** Seconds from `Retry-After` (429), when present. */
  readonly retryAfter?: number;

  constructor(status: number, code: string, message: string, retryAfter?: number) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }

  /** The error a response carries; tolerates bodies that are not API.md's shape. */
  static async from(response: Response): Promise<ApiError> {
    let code = codeForStatus(response.status);
    let message = response.statusText || `HTTP ${response.status}`;
    try {
      const text = await response.text();
      if (text) {
        const body = JSON.parse(text) as unknown;
        const err = (body as { error?: { code?: unknown; message?: unknown } } | null)?.error;
        if (err && typeof err.code === "string") code = err.code;
        if (err && typeof err.message === "string") message = err.message;
      }
    } catch {
      // not JSON: keep the status-derived code
    }
    const retry = Number(response.headers.get("retry-after"));
    return new ApiError(response.status, code, message, Number.isFinite(retry) && retry > 0 ? retry : undefined);
  }
}

/** The session can no longer be used (revoked, logged out, refresh refused). */
export class SessionEndedError extends Error {
  constructor(readonly reason: string) {
    super(`session ended: ${reason}`);
    this.name = "SessionEndedError";
  }
}

/** A failure to reach the server at all (offline, DNS, connection refused). */
export class NetworkError extends Error {
  constructor(message: string, readonly cause?: unknown) {
    super(message);
    this.name = "NetworkError";
  }
}

export function codeForStatus(status: number): string {
  switch (status) {
    case 400: return "invalid_argument";
    case 401: return "unauthenticated";
    case 403: return "permission_denied";
    case 404: return "not_found";
    case 409: return "already_exists";
    case 413: return "payload_too_large";
    case 429: return "rate_limited";
    case 503: return "unavailable";
    default: return status >= 500 ? "internal" : "unknown";
  }
}
