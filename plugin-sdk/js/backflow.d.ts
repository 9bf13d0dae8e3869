// Types of backflow.js, the JavaScript SDK for backflow plugins (contract backflow:plugin@0.2.0).
// Hand-written; the WIT shapes below match what jco generates for wit/v0.2.0/plugin.wit.

// ---- WIT shapes (as jco's bindings see them) ------------------------------------------

export type ValueType = 'any' | 'boolean' | 'integer' | 'float' | 'decimal' | 'text' | 'bytes' | 'timestamp' | 'date' | 'json';
export type PluginKind = 'source' | 'destination' | 'quality-check' | 'approval-policy';
export type Operation = 'insert' | 'update' | 'delete' | 'append';
export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error';
export type ChangeKind = 'added' | 'changed' | 'removed' | 'unchanged';
export type Role = 'admin' | 'approver' | 'contributor' | 'viewer';

export interface Column {
  name: string;
  valueType: ValueType;
  nullable: boolean;
}

/** The WIT record row-batch; `payload` is UTF-8 JSON text (row-encoding json). */
export interface RowBatch {
  columns: Column[];
  rowCount: number;
  payload: Uint8Array;
}

export interface ConfigError {
  /** Dotted path of the field (`headers.Authorization`), or "" when not about one field. */
  field: string;
  message: string;
}

export interface RateLimit {
  message: string;
  retryAfterMs?: bigint;
}

export interface RowError {
  rowIndex: number;
  key?: string;
  message: string;
}

export type PluginErrorValue =
  | { tag: 'retryable'; val: string }
  | { tag: 'rate-limited'; val: RateLimit }
  | { tag: 'bad-config'; val: ConfigError }
  | { tag: 'bad-row'; val: RowError }
  | { tag: 'fatal'; val: string };

export type RowOutcome = { tag: 'accepted' } | { tag: 'rejected'; val: string } | { tag: 'retryable'; val: string };

export interface RateLimitSpec {
  requestsPerSecond?: number;
  rowsPerSecond?: number;
}

export interface PluginSpec {
  name: string;
  version: string;
  kind: PluginKind;
  description: string;
  configSchema: string;
  operations: Operation[];
  maxBatchSize: number;
  defaultRateLimit?: RateLimitSpec;
  rowEncoding: 'msgpack' | 'json';
}

export interface SyncContext {
  syncName: string;
  primaryKey: string[];
  runId: string;
}

/** plan-summary, with its u64 counts as numbers (the SDK converts them from BigInt). */
export interface PlanSummary {
  syncName: string;
  columns: Column[];
  snapshotRows: number;
  modelRows: number;
  added: number;
  changed: number;
  removed: number;
}

export interface CheckResult {
  verdict: 'pass' | 'warn' | 'fail';
  message: string;
  samples: string[];
}

/** sync-impact, with its u64 counts as numbers. */
export interface SyncImpact {
  syncName: string;
  destination: string;
  mode: string;
  added: number;
  changed: number;
  removed: number;
  columnLabels: string[];
}

/** approval-request, with its counts as numbers. */
export interface ApprovalRequest {
  kind: 'config-change' | 'run';
  author: string;
  authorRole: Role;
  description: string;
  syncs: SyncImpact[];
}

export interface ApprovalsNeeded {
  count: number;
  roles: Role[];
  allowSelfApproval: boolean;
  reason: string;
}

export type Decision = { tag: 'approve'; val: string } | { tag: 'require'; val: ApprovalsNeeded } | { tag: 'reject'; val: string };

export interface HttpHeader {
  name: string;
  value: string;
}

/** The host import `backflow:plugin/host@0.2.0` (`import * as host from ...`). */
export interface Host {
  log(level: LogLevel, message: string): void;
  nowMs(): bigint;
  httpSend(request: { method: string; url: string; headers: HttpHeader[]; body: Uint8Array; timeoutMs?: number }): { status: number; headers: HttpHeader[]; body: Uint8Array };
}

// ---- Host ------------------------------------------------------------------------------

/** Installs the host import (define* with `{ host }` does it); tests may pass a fake. */
export function setHost(host: Partial<Host> | null): void;

/** Log into the engine's log; arguments are joined with spaces, non-strings as JSON. */
export const log: {
  trace(...args: unknown[]): void;
  debug(...args: unknown[]): void;
  info(...args: unknown[]): void;
  warn(...args: unknown[]): void;
  error(...args: unknown[]): void;
};

/** Milliseconds since the Unix epoch, from the host's clock. */
export function nowMs(): number;

// ---- Errors and outcomes ---------------------------------------------------------------

/** A throwable plugin error: `payload` (what jco takes from a thrown value) = `{ tag, val }`. */
export class PluginError extends Error {
  constructor(tag: PluginErrorValue['tag'], val: PluginErrorValue['val']);
  readonly tag: PluginErrorValue['tag'];
  readonly val: PluginErrorValue['val'];
  payload: PluginErrorValue;
  /** Set on errors thrown by httpSend: the host's http-error. */
  httpError?: { tag: 'denied' | 'invalid-request' | 'connection' | 'timeout'; val: string };
}

export function retryable(message: string): PluginError;
export function rateLimited(message: string, retryAfterMs?: number | bigint | null): PluginError;
export function badConfig(field: string, message: string): PluginError;
export function badRow(rowIndex: number, key: string | null | undefined, message: string): PluginError;
export function fatal(message: string): PluginError;
export const errors: {
  retryable: typeof retryable;
  rateLimited: typeof rateLimited;
  badConfig: typeof badConfig;
  badRow: typeof badRow;
  fatal: typeof fatal;
};
export function configError(field: string, message: string): ConfigError;
/** Any thrown value as a plugin-error value (unknown exceptions: fatal with their message). */
export function toPluginError(e: unknown): PluginErrorValue;

type RowCountLike = number | { rowCount: number } | { length: number };
export const outcome: {
  readonly accepted: { readonly tag: 'accepted' };
  rejected(message: string): RowOutcome;
  retryable(message: string): RowOutcome;
  acceptAll(n: RowCountLike): RowOutcome[];
  rejectAll(n: RowCountLike, message: string): RowOutcome[];
  retryAll(n: RowCountLike, message: string): RowOutcome[];
};

// ---- Values ----------------------------------------------------------------------------

export const VALUE_TYPES: readonly ValueType[];

/** A timestamp: a Date (ms) that keeps the microseconds below the millisecond. */
export class Timestamp extends Date {
  constructor(ms: number, microsecond?: number);
  static fromMicros(micros: bigint | number): Timestamp;
  /** RFC 3339, any offset, up to 9 fractional digits (cut to microseconds). */
  static fromString(text: string): Timestamp;
  /** 0-999: microseconds below the millisecond. */
  microsecond: number;
  /** Microseconds since the epoch, exact. */
  readonly micros: bigint;
  /** RFC 3339 in UTC with 3 fractional digits, or 6 when `microsecond` is not 0. */
  toJSON(): string;
}

/**
 * The native value of a cell: integer -> number | bigint (beyond 2^53), float -> number,
 * decimal/text/date -> string, bytes -> Uint8Array, timestamp -> Timestamp, json -> parsed,
 * any -> any of these; null for null.
 */
export type Value = null | boolean | number | bigint | string | Uint8Array | Timestamp | JsonValue;
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

export function decodeValue(valueType: ValueType, wire: unknown): Value;
export function encodeValue(valueType: ValueType, value: unknown): JsonValue;
export function base64Encode(bytes: Uint8Array | ArrayBuffer | ArrayLike<number>): string;
export function base64Decode(text: string): Uint8Array;
export function utf8Encode(text: string): Uint8Array;
export function utf8Decode(bytes: Uint8Array): string;
/** JSON.stringify that writes BigInt (number within 2^53, else string) and Uint8Array (base64). */
export function jsonStringify(value: unknown, space?: string | number): string;

// ---- Batches ---------------------------------------------------------------------------

/** A row batch decoded lazily: parsed once on first use, values converted when read. */
export class Batch implements Iterable<Row> {
  constructor(rowBatch: RowBatch | { columns: Column[]; rowCount: number; payload: Uint8Array | string });
  static from(rowBatch: RowBatch | Batch): Batch;
  readonly columns: Column[];
  readonly rowCount: number;
  readonly length: number;
  readonly names: string[];
  /** The parsed payload: rows of wire values in column order. */
  readonly raw: unknown[][];
  columnIndex(name: string): number;
  get(rowIndex: number, name: string): Value;
  rows(): Row[];
  row(rowIndex: number): Row;
  [Symbol.iterator](): Iterator<Row>;
  /** Every value of a column, converted. */
  column(name: string): Value[];
  /** Every value of a column as on the wire. */
  rawColumn(name: string): unknown[];
  toObjects(): Record<string, Value>[];
  /** Rows as JSON-ready objects (decimals, dates, timestamps as strings, bytes base64). */
  toJSON(): Record<string, JsonValue>[];
}

/** A view of one row of a Batch. */
export class Row {
  readonly batch: Batch;
  /** Wire values in column order. */
  readonly values: unknown[];
  /** Position in the batch. */
  readonly index: number;
  /** The converted value of a column; throws for a column the batch does not have. */
  get(name: string): Value;
  has(name: string): boolean;
  /** The converted value at a column position. */
  getAt(columnIndex: number): Value;
  raw(name: string): unknown;
  toObject(): Record<string, Value>;
  toJSON(): Record<string, JsonValue>;
}

export function decodeBatch(rowBatch: RowBatch | Batch): Batch;

/** A column as given by a plugin: the WIT shape or `{ name, type, nullable? }` (nullable by default). */
export type ColumnSpec = Column | { name: string; type: ValueType; nullable?: boolean };
export function normalizeColumns(columns: ColumnSpec[]): Column[];
/** Rows (arrays in column order or objects by name) to a row-batch in the JSON encoding. */
export function encodeBatch(columns: ColumnSpec[], rows: Array<unknown[] | Record<string, unknown>>): RowBatch;

// ---- Configuration ---------------------------------------------------------------------

export interface FieldSpec {
  type?: 'string' | 'number' | 'integer' | 'boolean' | 'object' | 'array' | 'any';
  required?: boolean;
  requiredMessage?: string;
  default?: unknown;
  enum?: unknown[];
  min?: number;
  max?: number;
  pattern?: RegExp;
  patternMessage?: string;
  nonEmpty?: boolean;
  description?: string;
  /** Known fields of an object. */
  fields?: Record<string, FieldSpec>;
  /** An object used as a map: every value of this kind (`headers`). */
  values?: FieldSpec;
  /** Array items. */
  items?: FieldSpec;
  allowUnknown?: boolean;
  /** Custom check: a message, messages, or `{ field, message }` problems; nothing when fine. */
  check?(value: any, config: any): undefined | string | ConfigError | Array<string | ConfigError>;
}
export type ConfigFields = Record<string, FieldSpec>;

export function parseConfig<C = Record<string, any>>(text: string | object | null | undefined, fields?: ConfigFields, options?: { allowUnknown?: boolean }): { config: C | null; errors: ConfigError[] };
export function configSchema(fields: ConfigFields, options?: { title?: string; description?: string; allowUnknown?: boolean }): string;

// ---- HTTP through the host -------------------------------------------------------------

export interface HttpRequestInit {
  method?: string;
  url: string;
  headers?: Record<string, string> | HttpHeader[];
  body?: string | Uint8Array;
  /** Sent as JSON (sets content-type). */
  json?: unknown;
  timeoutMs?: number;
}

export class HttpResponse {
  readonly status: number;
  readonly headers: HttpHeader[];
  readonly body: Uint8Array;
  readonly ok: boolean;
  header(name: string): string | null;
  text(): string;
  json(): any;
}

/** Sends through the host; throws PluginError (retryable: connection/timeout, fatal: denied/invalid). */
export function httpSend(request: HttpRequestInit): HttpResponse;
export function retryAfterMs(value: string | null | undefined): number | undefined;
/** 429 -> rate-limited, 408/5xx -> retryable, else null. */
export function errorForStatus(response: HttpResponse, what?: string): PluginError | null;
export function snippet(response: HttpResponse, max?: number): string;

// ---- Results of checks and policies ---------------------------------------------------

type Samples = Iterable<string | Row | object>;
export function pass(message: string): CheckResult;
export function warn(message: string, samples?: Samples): CheckResult;
export function fail(message: string, samples?: Samples): CheckResult;
export function approve(reason: string): Decision;
export function reject(reason: string): Decision;
export function requireApprovals(count: number, roles: Role[], options?: { allowSelfApproval?: boolean; reason?: string }): Decision;

// ---- Defining plugins ------------------------------------------------------------------

type MaybePromise<T> = T | Promise<T>;

export interface SpecInit {
  name: string;
  version?: string;
  description?: string;
  /** JSON Schema text or object; by default generated from `config`. */
  configSchema?: string | object;
  operations?: Operation[];
  maxBatchSize?: number;
  defaultRateLimit?: RateLimitSpec;
}

interface DefinitionBase<C> {
  /** `import * as host from 'backflow:plugin/host@0.2.0'`. */
  host?: Partial<Host>;
  spec: SpecInit;
  /** The config's fields: checked by check-config and before open, defaults filled in. */
  config?: ConfigFields;
  allowUnknownConfig?: boolean;
  /** More checks on a config that passed `config`; return problems (or throw badConfig). */
  validate?(config: C): undefined | string | ConfigError | Array<string | ConfigError>;
}

export interface PluginExport {
  spec(): PluginSpec;
  checkConfig(config: string): ConfigError[];
}

export interface WriterImpl {
  write(op: Operation, batch: Batch): MaybePromise<RowOutcome[]>;
  finish?(): MaybePromise<void>;
}
export interface DestinationDefinition<C = any> extends DefinitionBase<C> {
  open(config: C, context: SyncContext): MaybePromise<WriterImpl>;
}
export function defineDestination<C = any>(def: DestinationDefinition<C>): {
  plugin: PluginExport;
  destination: { Writer: any };
};

export interface ReaderImpl {
  columns: ColumnSpec[] | (() => ColumnSpec[]);
  /** Rows, a ready row-batch, or null/undefined/[] when exhausted. */
  nextBatch(maxRows: number): MaybePromise<Array<unknown[] | Record<string, unknown>> | RowBatch | null | undefined>;
}
export interface SourceDefinition<C = any> extends DefinitionBase<C> {
  open(config: C, query: string): MaybePromise<ReaderImpl>;
}
export function defineSource<C = any>(def: SourceDefinition<C>): {
  plugin: PluginExport;
  source: { Reader: any };
};

export interface CheckerImpl {
  observe?(kind: ChangeKind, after: Batch, before: Batch | null): MaybePromise<void>;
  finish(): MaybePromise<CheckResult>;
}
export interface QualityCheckDefinition<C = any> extends DefinitionBase<C> {
  open(config: C, plan: PlanSummary): MaybePromise<CheckerImpl>;
}
export function defineQualityCheck<C = any>(def: QualityCheckDefinition<C>): {
  plugin: PluginExport;
  qualityCheck: { Checker: any };
};

export interface ApprovalPolicyDefinition<C = any> extends DefinitionBase<C> {
  evaluate(config: C, request: ApprovalRequest): MaybePromise<Decision>;
}
export function defineApprovalPolicy<C = any>(def: ApprovalPolicyDefinition<C>): {
  plugin: PluginExport;
  approvalPolicy: { evaluate(config: string, request: any): any };
};

export function definePlugin(def: (DestinationDefinition & { kind: 'destination' }) | (SourceDefinition & { kind: 'source' }) | (QualityCheckDefinition & { kind: 'quality-check' }) | (ApprovalPolicyDefinition & { kind: 'approval-policy' })): any;
