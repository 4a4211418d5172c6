/**
 * Every error the package throws: one base, {@link NexusError}.
 *
 * - {@link WireError}: a value, record or action is refused by the wire rules
 *   (spec/README.md); its `code` is the vectors' error code.
 * - {@link ApiError}: the server answered with `{"error":{"code","message",…}}`.
 * - {@link TransportError} (and {@link Unreachable}): no answer.
 * - {@link UnexpectedAnswer}: an answer that is not what the API promises.
 * - {@link InvalidRecordFromServer}: a record or action in an answer does not verify.
 * - {@link KeyFileError}: key files.
 */

export class NexusError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** A JSON value, record or action is refused; `code` names the rule it breaks. */
export class WireError extends NexusError {
  readonly code: string;
  readonly detail: string;
  constructor(code: string, detail = "") {
    super(detail ? `${code}: ${detail}` : code);
    this.code = code;
    this.detail = detail;
  }
}

/** The API's error codes (`nexus_wire::ErrorCode`) with the HTTP status each has. */
export const ERROR_STATUS = {
  malformed_json: 400,
  invalid_record: 400,
  hash_mismatch: 400,
  too_many_parents: 400,
  selector_too_large: 400,
  lease_out_of_range: 400,
  clock_skew: 400,
  legacy_action: 400,
  ambiguous_id: 400,
  bad_request: 400,
  invalid_contract: 400,
  bad_signature: 401,
  unauthorized: 401,
  inadmissible: 403,
  not_proposer: 403,
  wrong_deployment: 403,
  author_not_allowed: 403,
  hint_not_permitted: 403,
  upgrade_refused: 403,
  not_found: 404,
  no_route: 404,
  method_not_allowed: 405,
  request_timeout: 408,
  already_claimed: 409,
  lease_expired: 409,
  not_holder: 409,
  stale_token: 409,
  already_resolved: 409,
  withdrawn: 409,
  replayed: 409,
  conflict: 409,
  too_many_hints: 409,
  stale_contract: 409,
  body_too_large: 413,
  unknown_parent: 422,
  wrong_kind: 422,
  hint_quota: 429,
  rate_limited: 429,
  storage: 500,
  not_implemented: 501,
  too_many_connections: 503,
  governance_pending: 503,
  insufficient_storage: 507,
} as const;

/** An error code this version knows (a newer server may send others: `ApiError.code` is a string). */
export type ErrorCode = keyof typeof ERROR_STATUS;

/** A request failed; names the method and URL. */
export class RequestError extends NexusError {
  readonly method: string;
  readonly url: string;
  constructor(method: string, url: string, message: string) {
    super(`${method} ${url}: ${message}`);
    this.method = method;
    this.url = url;
  }
}

/** The exchange failed after connecting (timeout, reset, protocol error). */
export class TransportError extends RequestError {}

/** No connection could be made (refused, host not found). */
export class Unreachable extends TransportError {}

/** The answer is not what the API promises (not JSON, wrong shape, non-API error). */
export class UnexpectedAnswer extends RequestError {
  readonly status: number;
  readonly reason: string;
  constructor(method: string, url: string, status: number, reason: string) {
    super(method, url, `unexpected answer (HTTP ${status}): ${reason}`);
    this.status = status;
    this.reason = reason;
  }
}

/** A record or action in the answer does not verify (`cause` says why). */
export class InvalidRecordFromServer extends RequestError {
  override readonly cause: WireError;
  constructor(method: string, url: string, cause: WireError) {
    super(method, url, `the server sent an invalid record: ${cause.message}`);
    this.cause = cause;
  }
}

/**
 * The server's error answer: HTTP `status`, stable `code`, `message`, and the other
 * members of the error object in `details` (`holder`, `lease_until`, `token` of an
 * `already_claimed`; `hint`, `reason` of an `inadmissible`; `parent` of an
 * `unknown_parent`; …).
 */
export class ApiError extends RequestError {
  readonly status: number;
  readonly code: string;
  readonly apiMessage: string;
  readonly details: Readonly<Record<string, unknown>>;
  constructor(method: string, url: string, status: number, code: string, message: string, details: Record<string, unknown>) {
    super(method, url, `HTTP ${status} ${code}: ${message}`);
    this.status = status;
    this.code = code;
    this.apiMessage = message;
    this.details = details;
  }

  /** True when `code` is one this version knows. */
  get known(): boolean {
    return Object.prototype.hasOwnProperty.call(ERROR_STATUS, this.code);
  }

  private str(name: string): string | undefined {
    const v = this.details[name];
    return typeof v === "string" ? v : undefined;
  }

  private int(name: string): number | undefined {
    const v = this.details[name];
    return typeof v === "number" && Number.isInteger(v) ? v : undefined;
  }

  /** `holder` (`already_claimed`, `lease_expired`, `not_holder`). */
  get holder(): string | undefined {
    return this.str("holder");
  }
  /** `lease_until` (`already_claimed`, `lease_expired`). */
  get leaseUntil(): number | undefined {
    return this.int("lease_until");
  }
  /** `token` of an `already_claimed`. */
  get token(): number | undefined {
    return this.int("token");
  }
  /** `hint` of an `inadmissible`: the Hint that denies. */
  get hint(): string | undefined {
    return this.str("hint");
  }
  /** `reason` of an `inadmissible`: the Hint's reason. */
  get reason(): string | undefined {
    return this.str("reason");
  }
  /** `parent` of an `unknown_parent`. */
  get parent(): string | undefined {
    return this.str("parent");
  }
  /** `retry_after_ms` of a `rate_limited`. */
  get retryAfterMs(): number | undefined {
    return this.int("retry_after_ms");
  }
}

/** A key could not be made, saved or loaded; names the file when there is one. */
export class KeyFileError extends NexusError {
  readonly path: string | undefined;
  constructor(message: string, path?: string) {
    super(path !== undefined ? `${path}: ${message}` : message);
    this.path = path;
  }
}
