// backflow.js: the JavaScript SDK for backflow plugins (contract backflow:plugin@0.2.0).
//
// One ES module without dependencies. It runs inside a component built with
// `jco componentize` (StarlingMonkey) and natively in Node (its tests). Types: backflow.d.ts.
//
//   import * as host from 'backflow:plugin/host@0.2.0';
//   import { defineDestination, outcome } from '../lib/backflow.js';
//   export const { plugin, destination } = defineDestination({ host, spec, config, open });
//
// What it does:
// - decodes row batches in the JSON row encoding (wit/README.md) lazily: one JSON.parse per
//   batch, a value is converted only when it is read (`row.get(name)`, `batch.column(name)`);
// - encodes rows into batches (sources);
// - builds plugin errors and row outcomes in the shapes jco's bindings expect;
// - wraps a plugin so that an exception thrown anywhere becomes a `plugin-error` value (or a
//   safe value where the export cannot fail) instead of a trap, which would kill the instance.
//
// Native value for each value-type (decoding; encoding accepts these and more):
//   boolean   -> boolean
//   integer   -> number; a BigInt when beyond +/-(2^53-1) (the wire carries those as strings)
//   float     -> number (NaN, Infinity, -Infinity included)
//   decimal   -> string, exact ("-12.50"); JavaScript has no decimal type
//   text      -> string
//   bytes     -> Uint8Array
//   timestamp -> Timestamp, a Date (millisecond) that keeps the exact microseconds:
//                `.micros` (BigInt since the epoch), `.microsecond` (0-999 below the ms) and
//                `.toJSON()` (RFC 3339 with 6 fractional digits when they are not zero)
//   date      -> string "YYYY-MM-DD" (a calendar date has no time zone; Date would invent one)
//   json      -> the parsed document
//   any       -> per row: null, boolean, number, string, or the above for tagged values
//                ({"decimal": ..} -> string, {"bytes": ..} -> Uint8Array, ...)
//   null      -> null, in every type

// ---------------------------------------------------------------------------------------
// Host

/** The host import (`backflow:plugin/host@0.2.0`) once a plugin was defined with it. */
let HOST = null;

/** Installs the host import. `define*({ host })` calls it; tests may pass a fake. */
export function setHost(host) {
  HOST = host || null;
}

function formatLogArgs(args) {
  let out = '';
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (i > 0) out += ' ';
    if (typeof a === 'string') out += a;
    else if (a instanceof Error) out += errorText(a);
    else {
      try {
        out += jsonStringify(a);
      } catch (_) {
        out += String(a);
      }
    }
  }
  return out;
}

function logAt(level, args) {
  const message = formatLogArgs(args);
  if (HOST && typeof HOST.log === 'function') {
    try {
      HOST.log(level, message);
      return;
    } catch (_) {
      // fall through to stderr
    }
  }
  // No host (natively, in tests): info and above to stderr.
  if (level !== 'trace' && level !== 'debug' && typeof console !== 'undefined' && console.error) console.error(`[${level}] ${message}`);
}

/** Logging into the engine's log (tracing), attributed to the plugin. */
export const log = {
  trace: (...args) => logAt('trace', args),
  debug: (...args) => logAt('debug', args),
  info: (...args) => logAt('info', args),
  warn: (...args) => logAt('warn', args),
  error: (...args) => logAt('error', args),
};

/** Milliseconds since the Unix epoch, from the host's clock (a number). */
export function nowMs() {
  if (HOST && typeof HOST.nowMs === 'function') return Number(HOST.nowMs());
  return Date.now();
}

// ---------------------------------------------------------------------------------------
// Errors (variant plugin-error) and row outcomes (variant row-outcome)

const ERROR_TAGS = ['retryable', 'rate-limited', 'bad-config', 'bad-row', 'fatal'];

/**
 * A plugin error you can throw. It carries the WIT value three ways: as its own `payload`
 * (what jco's bindings take from a thrown value), and as `tag`/`val` (so the error is itself
 * the variant value `{ tag, val }`).
 */
export class PluginError extends Error {
  constructor(tag, val) {
    super(describePluginError(tag, val));
    this.name = 'PluginError';
    this.tag = tag;
    this.val = val;
    this.payload = { tag, val };
  }
}

function describePluginError(tag, val) {
  switch (tag) {
    case 'retryable':
    case 'fatal':
      return `${tag}: ${val}`;
    case 'rate-limited':
      return `rate-limited: ${val.message}` + (val.retryAfterMs === undefined ? '' : ` (retry after ${val.retryAfterMs} ms)`);
    case 'bad-config':
      return `bad-config: ${val.field ? val.field + ': ' : ''}${val.message}`;
    case 'bad-row':
      return `bad-row ${val.rowIndex}${val.key === undefined ? '' : ` (${val.key})`}: ${val.message}`;
    default:
      return `${tag}`;
  }
}

/** Transient: the same call may succeed if repeated (connection reset, 5xx, timeout). */
export function retryable(message) {
  return new PluginError('retryable', str(message));
}

/** The remote asked to slow down; `retryAfterMs` (number or BigInt) if it said how long. */
export function rateLimited(message, retryAfterMs) {
  const val = { message: str(message), retryAfterMs: undefined };
  if (retryAfterMs !== undefined && retryAfterMs !== null) val.retryAfterMs = toU64(retryAfterMs);
  return new PluginError('rate-limited', val);
}

/** The configuration is wrong; `field` is the dotted path (`headers.Authorization`) or "". */
export function badConfig(field, message) {
  return new PluginError('bad-config', configError(field, message));
}

/** One row is bad: its index in the batch, its key if known (else null), why. */
export function badRow(rowIndex, key, message) {
  return new PluginError('bad-row', {
    rowIndex: toU32(rowIndex),
    key: key === undefined || key === null ? undefined : str(key),
    message: str(message),
  });
}

/** Anything else that makes further calls pointless. */
export function fatal(message) {
  return new PluginError('fatal', str(message));
}

/** The plugin-error constructors as one object. */
export const errors = { retryable, rateLimited, badConfig, badRow, fatal };

/** A config-error record. */
export function configError(field, message) {
  return { field: field === undefined || field === null ? '' : str(field), message: str(message) };
}

const ACCEPTED = Object.freeze({ tag: 'accepted' });

function rowCountOf(n) {
  if (typeof n === 'number') return n;
  if (n && typeof n.rowCount === 'number') return n.rowCount;
  if (n && typeof n.length === 'number') return n.length;
  throw new TypeError('expected a row count, a batch or an array');
}

/** Row outcomes (what `write` returns, one per row in batch order). */
export const outcome = {
  /** The destination has the row. */
  accepted: ACCEPTED,
  /** Permanently refused; retried on the next run only. */
  rejected: (message) => ({ tag: 'rejected', val: str(message) }),
  /** Not processed this time; the engine may resend it. */
  retryable: (message) => ({ tag: 'retryable', val: str(message) }),
  /** `accepted` for every row of a batch (or for `n` rows). */
  acceptAll: (n) => new Array(rowCountOf(n)).fill(ACCEPTED),
  /** `rejected(message)` for every row. */
  rejectAll: (n, message) => new Array(rowCountOf(n)).fill(Object.freeze({ tag: 'rejected', val: str(message) })),
  /** `retryable(message)` for every row. */
  retryAll: (n, message) => new Array(rowCountOf(n)).fill(Object.freeze({ tag: 'retryable', val: str(message) })),
};

function errorText(e) {
  if (e instanceof Error) return e.name && e.name !== 'Error' ? `${e.name}: ${e.message}` : e.message || String(e);
  try {
    return typeof e === 'string' ? e : jsonStringify(e);
  } catch (_) {
    return String(e);
  }
}

function isPluginErrorValue(v) {
  if (!v || typeof v !== 'object' || ERROR_TAGS.indexOf(v.tag) < 0) return false;
  const val = v.val;
  switch (v.tag) {
    case 'retryable':
    case 'fatal':
      return typeof val === 'string';
    case 'rate-limited':
      return !!val && typeof val === 'object' && typeof val.message === 'string';
    case 'bad-config':
      return !!val && typeof val === 'object' && typeof val.message === 'string';
    case 'bad-row':
      return !!val && typeof val === 'object' && typeof val.message === 'string';
  }
  return false;
}

/** Normalizes a plugin-error value so jco can lower it (string fields, BigInt retry-after). */
function normalizeErrorValue(v) {
  const val = v.val;
  switch (v.tag) {
    case 'rate-limited':
      return { tag: 'rate-limited', val: { message: val.message, retryAfterMs: val.retryAfterMs === undefined || val.retryAfterMs === null ? undefined : toU64(val.retryAfterMs) } };
    case 'bad-config':
      return { tag: 'bad-config', val: configError(val.field, val.message) };
    case 'bad-row':
      return { tag: 'bad-row', val: { rowIndex: toU32(val.rowIndex), key: val.key === undefined || val.key === null ? undefined : str(val.key), message: val.message } };
    default:
      return { tag: v.tag, val };
  }
}

/**
 * Any thrown value as a plugin-error value `{ tag, val }`: a PluginError or a value of that
 * shape as itself, a host HTTP error by its kind (connection/timeout: retryable), anything else
 * as `fatal` with its message.
 */
export function toPluginError(e) {
  try {
    if (isPluginErrorValue(e)) return normalizeErrorValue(e);
    if (e && typeof e === 'object' && Object.prototype.hasOwnProperty.call(e, 'payload')) {
      const p = e.payload;
      if (isPluginErrorValue(p)) return normalizeErrorValue(p);
      if (p && typeof p === 'object' && HTTP_ERROR_TAGS.indexOf(p.tag) >= 0) return httpErrorToPluginError(p, '').payload;
    }
    return { tag: 'fatal', val: errorText(e) };
  } catch (_) {
    return { tag: 'fatal', val: 'error (unprintable)' };
  }
}

/** What the wrappers throw: carries `payload`, which jco's bindings turn into `err(payload)`. */
function asThrowable(e) {
  if (e instanceof PluginError && isPluginErrorValue(e.payload)) {
    const p = normalizeErrorValue(e.payload);
    e.payload = p;
    return e;
  }
  if (e instanceof Error && !(e instanceof PluginError) && e.stack) {
    // A bug in the plugin: its stack, in the author's sources, at the error level; the
    // error's message names the first frame of the author's code.
    const stack = mapStack(e.stack);
    log.error(`${errorText(e)}\n${stack}`);
    const p = toPluginError(e);
    // Natively (Node) the message stays as thrown: the stack already names the sources.
    const at = stack !== e.stack ? authorFrame(stack) : null;
    return new PluginError(p.tag, p.tag === 'fatal' && at ? `${p.val} (at ${at})` : p.val);
  }
  const p = toPluginError(e);
  return new PluginError(p.tag, p.val);
}

// ---------------------------------------------------------------------------------------
// Stack traces in the author's sources (issue 41)
//
// The component runs one bundle (dist/bundle.js, esbuild's): its stack frames name bundle
// lines. The templates' build (build.mjs) appends the bundle's source map as
// `globalThis.__backflowSourceMap = { file, sources, mappings }`; frames are mapped back
// through it when an error is reported (never before: decoding costs nothing until then).

let DECODED_MAP = null;


/**
 * A source map's `mappings` decoded: for each generated line (0-based), its segments
 * `[generatedColumn, sourceIndex, sourceLine, sourceColumn]` (0-based), in column order.
 */
export function decodeMappings(mappings) {
  const VLQ_INDEX = {};
  for (let i = 0; i < B64.length; i++) VLQ_INDEX[B64[i]] = i;
  const lines = [];
  let source = 0;
  let sourceLine = 0;
  let sourceColumn = 0;
  for (const lineText of String(mappings).split(';')) {
    const segments = [];
    let column = 0;
    for (const segment of lineText.split(',')) {
      if (!segment) continue;
      const fields = [];
      let value = 0;
      let shift = 0;
      for (const ch of segment) {
        const digit = VLQ_INDEX[ch];
        if (digit === undefined) return lines;
        value += (digit & 31) << shift;
        if (digit & 32) {
          shift += 5;
        } else {
          fields.push(value & 1 ? -(value >>> 1) : value >>> 1);
          value = 0;
          shift = 0;
        }
      }
      column += fields[0] || 0;
      if (fields.length >= 4) {
        source += fields[1];
        sourceLine += fields[2];
        sourceColumn += fields[3];
        segments.push([column, source, sourceLine, sourceColumn]);
      }
    }
    lines.push(segments);
  }
  return lines;
}

/**
 * `stack` with every frame `...@FILE:LINE:COLUMN` (or `at ... (FILE:LINE:COLUMN)`) of the
 * bundle rewritten to the author's source file, line and column (1-based), through `map`
 * (default: the one the build embedded). Frames it cannot map stay as they are.
 */
export function mapStack(stack, map) {
  const m = map || (typeof globalThis !== 'undefined' ? globalThis.__backflowSourceMap : null);
  if (!m || typeof m.mappings !== 'string' || !Array.isArray(m.sources)) return String(stack);
  let lines;
  if (!map && DECODED_MAP) lines = DECODED_MAP;
  else {
    lines = decodeMappings(m.mappings);
    if (!map) DECODED_MAP = lines;
  }
  const bundle = typeof m.file === 'string' ? m.file : '';
  return String(stack).replace(/([^\s@()]+):(\d+):(\d+)/g, (whole, file, line, column) => {
    if (bundle && file !== bundle && !file.endsWith('/' + bundle)) return whole;
    const segments = lines[Number(line) - 1];
    if (!segments || !segments.length) return whole;
    const col = Number(column) - 1;
    let best = segments[0];
    for (const seg of segments) {
      if (seg[0] <= col) best = seg;
      else break;
    }
    const source = String(m.sources[best[1]] || '').replace(/^(\.\.\/)+/, '').replace(/^\.\//, '');
    if (!source) return whole;
    return `${source}:${best[2] + 1}:${best[3] + 1}`;
  });
}

/** The first `FILE:LINE:COLUMN` of a (mapped) stack that is the author's, not the SDK's. */
function authorFrame(stack) {
  const re = /([^\s@()]+\.(?:m?js|ts)):(\d+):(\d+)/g;
  let found;
  while ((found = re.exec(String(stack))) !== null) {
    if (!/(^|\/)(lib\/backflow\.js|bundle\.js)$/.test(found[1]) && found[1].indexOf('node_modules/') < 0) {
      return `${found[1]}:${found[2]}:${found[3]}`;
    }
  }
  return null;
}

/** Runs `fn`; any exception (or rejected promise) becomes a thrown PluginError. */
function guard(fn) {
  let r;
  try {
    r = fn();
  } catch (e) {
    throw asThrowable(e);
  }
  if (r && typeof r.then === 'function') {
    return r.then(undefined, (e) => {
      throw asThrowable(e);
    });
  }
  return r;
}

function guardThen(fn, then) {
  return guard(() => {
    const r = fn();
    if (r && typeof r.then === 'function') return r.then(then);
    return then(r);
  });
}

// ---------------------------------------------------------------------------------------
// Small helpers

function str(v) {
  if (typeof v === 'string') return v;
  if (v === undefined || v === null) return '';
  if (v instanceof Error) return errorText(v);
  return String(v);
}

function toU32(v) {
  const n = typeof v === 'bigint' ? Number(v) : Number(v);
  if (!Number.isFinite(n) || n < 0) return 0;
  return n > 0xffffffff ? 0xffffffff : Math.floor(n);
}

function toU64(v) {
  if (typeof v === 'bigint') return v < 0n ? 0n : v;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) return 0n;
  return BigInt(Math.ceil(n));
}

/** JSON.stringify that writes BigInts as numbers within 2^53 and as strings beyond. */
export function jsonStringify(value, space) {
  return JSON.stringify(value, bigintReplacer, space);
}

function bigintReplacer(_key, v) {
  if (typeof v === 'bigint') return v <= MAX_SAFE_BIG && v >= MIN_SAFE_BIG ? Number(v) : v.toString();
  if (v instanceof Uint8Array) return base64Encode(v);
  return v;
}

const MAX_SAFE_BIG = BigInt(Number.MAX_SAFE_INTEGER);
const MIN_SAFE_BIG = -MAX_SAFE_BIG;

const UTF8_DECODER = new TextDecoder();
const UTF8_ENCODER = new TextEncoder();

/** UTF-8 bytes to a string. */
export function utf8Decode(bytes) {
  return UTF8_DECODER.decode(bytes);
}

/** A string to UTF-8 bytes. */
export function utf8Encode(text) {
  return UTF8_ENCODER.encode(text);
}

// ---------------------------------------------------------------------------------------
// Base64 (standard alphabet, padded)

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const B64_INDEX = (() => {
  const t = new Int16Array(128).fill(-1);
  for (let i = 0; i < 64; i++) t[B64.charCodeAt(i)] = i;
  t['-'.charCodeAt(0)] = 62; // base64url, accepted when decoding
  t['_'.charCodeAt(0)] = 63;
  return t;
})();

/** Bytes (Uint8Array, ArrayBuffer or array of numbers) to standard padded base64. */
export function base64Encode(input) {
  const bytes = input instanceof Uint8Array ? input : input instanceof ArrayBuffer ? new Uint8Array(input) : Uint8Array.from(input);
  let out = '';
  const n = bytes.length;
  let i = 0;
  for (; i + 2 < n; i += 3) {
    const x = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    out += B64[x >> 18] + B64[(x >> 12) & 63] + B64[(x >> 6) & 63] + B64[x & 63];
  }
  if (i < n) {
    const x = (bytes[i] << 16) | (i + 1 < n ? bytes[i + 1] << 8 : 0);
    out += B64[x >> 18] + B64[(x >> 12) & 63] + (i + 1 < n ? B64[(x >> 6) & 63] : '=') + '=';
  }
  return out;
}

/** Base64 (standard or url-safe, padding optional) to a Uint8Array. Throws on bad input. */
export function base64Decode(text) {
  if (typeof text !== 'string') throw new TypeError('base64: expected a string');
  let end = text.length;
  while (end > 0 && text.charCodeAt(end - 1) === 61 /* = */) end--;
  if (text.length - end > 2 || end % 4 === 1) throw new TypeError('base64: bad length');
  const out = new Uint8Array(((end * 3) >> 2));
  let o = 0;
  let acc = 0;
  let bits = 0;
  for (let i = 0; i < end; i++) {
    const c = text.charCodeAt(i);
    const v = c < 128 ? B64_INDEX[c] : -1;
    if (v < 0) throw new TypeError(`base64: bad character at ${i}`);
    acc = ((acc << 6) | v) & 0xffffff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
    }
  }
  return o === out.length ? out : out.subarray(0, o);
}

// ---------------------------------------------------------------------------------------
// Timestamps

/**
 * A timestamp: a Date (milliseconds) that keeps the microseconds below the millisecond.
 * `micros` is the exact BigInt count of microseconds since the epoch; `toJSON()` gives
 * RFC 3339 in UTC with 3 or 6 fractional digits. (`setTime` and other setters keep
 * `microsecond` as it was.)
 */
export class Timestamp extends Date {
  /** `ms` since the epoch, `microsecond` 0-999 below that millisecond. */
  constructor(ms, microsecond) {
    super(ms);
    this.microsecond = microsecond | 0;
  }

  /** From a BigInt (or number) of microseconds since the epoch. */
  static fromMicros(micros) {
    const us = BigInt(micros);
    let ms = us / 1000n;
    let rem = us % 1000n;
    if (rem < 0n) {
      rem += 1000n;
      ms -= 1n;
    }
    return new Timestamp(Number(ms), Number(rem));
  }

  /** Parses RFC 3339 (any offset, up to 9 fractional digits); throws when it is not. */
  static fromString(text) {
    return parseTimestamp(text);
  }

  get micros() {
    return BigInt(this.getTime()) * 1000n + BigInt(this.microsecond);
  }

  toJSON() {
    const iso = this.toISOString();
    if (!this.microsecond) return iso;
    return iso.slice(0, -1) + String(this.microsecond).padStart(3, '0') + 'Z';
  }
}

const TS_RE = /^([+-]?\d{4,6})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:?\d{2})$/;

function parseTimestamp(text) {
  const m = TS_RE.exec(text);
  if (!m) throw new TypeError(`not an RFC 3339 timestamp: ${JSON.stringify(text)}`);
  const year = Number(m[1]);
  const frac = m[7] ? (m[7] + '00000000').slice(0, 9) : '000000000';
  const milli = Number(frac.slice(0, 3));
  const micro = Number(frac.slice(3, 6));
  let ms = Date.UTC(year, Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6]), milli);
  if (year >= 0 && year <= 99) {
    // Date.UTC maps years 0-99 to 1900-1999.
    const d = new Date(ms);
    d.setUTCFullYear(year, Number(m[2]) - 1, Number(m[3]));
    ms = d.getTime();
  }
  const zone = m[8];
  if (zone !== 'Z' && zone !== 'z') {
    const sign = zone[0] === '-' ? -1 : 1;
    const hh = Number(zone.slice(1, 3));
    const mm = Number(zone.slice(zone.length - 2));
    ms -= sign * (hh * 60 + mm) * 60000;
  }
  if (Number.isNaN(ms)) throw new TypeError(`not a valid timestamp: ${JSON.stringify(text)}`);
  return new Timestamp(ms, micro);
}

/** A Date's UTC calendar date as "YYYY-MM-DD". */
function dateOnly(d) {
  return d.toISOString().slice(0, 10);
}

// ---------------------------------------------------------------------------------------
// Value decoding (wire -> native)

/** The value types of the contract, in WIT order. */
export const VALUE_TYPES = Object.freeze(['any', 'boolean', 'integer', 'float', 'decimal', 'text', 'bytes', 'timestamp', 'date', 'json']);

function decodeInteger(v) {
  if (typeof v === 'number') return v;
  if (typeof v === 'string') {
    const b = BigInt(v);
    return b <= MAX_SAFE_BIG && b >= MIN_SAFE_BIG ? Number(b) : b;
  }
  throw new TypeError(`not an integer: ${JSON.stringify(v)}`);
}

function decodeFloat(v) {
  if (typeof v === 'number') return v;
  if (v === 'NaN') return NaN;
  if (v === 'Infinity') return Infinity;
  if (v === '-Infinity') return -Infinity;
  if (typeof v === 'string') return Number(v);
  throw new TypeError(`not a float: ${JSON.stringify(v)}`);
}

function identity(v) {
  return v;
}

function decodeAny(v) {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return v;
  for (const k in v) {
    const x = v[k];
    switch (k) {
      case 'decimal':
      case 'date':
      case 'text':
      case 'boolean':
      case 'json':
        return x;
      case 'bytes':
        return base64Decode(x);
      case 'timestamp':
        return parseTimestamp(x);
      case 'integer':
        return decodeInteger(x);
      case 'float':
        return decodeFloat(x);
      default:
        throw new TypeError(`unknown tag ${JSON.stringify(k)} in an \`any\` value`);
    }
  }
  throw new TypeError('empty object in an `any` value');
}

/** `any` in JSON form: tagged values untagged (decimals, dates, timestamps, bytes as strings). */
function anyToJSON(v) {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return v;
  for (const k in v) return v[k];
  return v;
}

const DECODERS = {
  any: decodeAny,
  boolean: identity,
  integer: decodeInteger,
  float: decodeFloat,
  decimal: identity,
  text: identity,
  bytes: base64Decode,
  timestamp: parseTimestamp,
  date: identity,
  json: identity,
};

/** One wire value (JSON row encoding) of a value type to its native value. */
export function decodeValue(valueType, wire) {
  if (wire === null || wire === undefined) return null;
  const d = DECODERS[valueType];
  if (!d) throw new TypeError(`unknown value type ${JSON.stringify(valueType)}`);
  return d(wire);
}

// ---------------------------------------------------------------------------------------
// Batches (decoding)

/**
 * A row batch in the JSON row encoding, decoded lazily: the payload is parsed once, on first
 * use, and each value is converted when it is read.
 */
export class Batch {
  /** `rowBatch`: the WIT record `{ columns, rowCount, payload }` (payload: Uint8Array or string). */
  constructor(rowBatch) {
    this.columns = rowBatch.columns;
    this.rowCount = rowBatch.rowCount;
    this._payload = rowBatch.payload;
    this._raw = null;
    this._index = null;
    this._decoders = null;
    this._rows = null;
  }

  /** Same as `new Batch(rowBatch)`. */
  static from(rowBatch) {
    return rowBatch instanceof Batch ? rowBatch : new Batch(rowBatch);
  }

  get length() {
    return this.rowCount;
  }

  /** The column names, in order. */
  get names() {
    return this._meta().names;
  }

  /** The parsed payload: an array of rows, each an array of wire values in column order. */
  get raw() {
    if (this._raw === null) {
      const p = this._payload;
      const text = typeof p === 'string' ? p : UTF8_DECODER.decode(p);
      const raw = text.length === 0 ? [] : JSON.parse(text);
      if (!Array.isArray(raw)) throw new TypeError('row batch payload is not a JSON array');
      if (raw.length !== this.rowCount) throw new TypeError(`row batch says ${this.rowCount} rows but its payload has ${raw.length}`);
      this._raw = raw;
      this._payload = null;
    }
    return this._raw;
  }

  _meta() {
    if (this._index === null) {
      const cols = this.columns;
      const index = Object.create(null);
      const decoders = new Array(cols.length);
      const names = new Array(cols.length);
      let anyColumns = false;
      for (let i = 0; i < cols.length; i++) {
        const c = cols[i];
        names[i] = c.name;
        if (!(c.name in index)) index[c.name] = i;
        const d = DECODERS[c.valueType];
        if (!d) throw new TypeError(`column ${c.name}: unknown value type ${JSON.stringify(c.valueType)}`);
        // null: the wire value is the native value (no call on read).
        decoders[i] = d === identity ? null : d;
        if (c.valueType === 'any') anyColumns = true;
      }
      this._index = index;
      this._decoders = decoders;
      this._names = names;
      this._anyColumns = anyColumns;
    }
    return { index: this._index, decoders: this._decoders, names: this._names };
  }

  /** The position of a column, or -1. */
  columnIndex(name) {
    this._meta();
    const i = this._index[name];
    return i === undefined ? -1 : i;
  }

  _requireIndex(name) {
    if (this._index === null) this._meta();
    const i = this._index[name];
    if (i === undefined) throw new TypeError(`no column ${JSON.stringify(name)} in this batch (columns: ${this._names.join(', ')})`);
    return i;
  }

  /** The value of column `name` in row `rowIndex`, converted. */
  get(rowIndex, name) {
    const i = this._requireIndex(name);
    const v = this.raw[rowIndex][i];
    if (v === null || v === undefined) return null;
    const d = this._decoders[i];
    return d === null ? v : d(v);
  }

  /** Light views of every row (`row.get(name)`, `row.toObject()`), created once. */
  rows() {
    if (this._rows === null) {
      const raw = this.raw;
      if (this._index === null) this._meta();
      const rows = new Array(raw.length);
      for (let r = 0; r < raw.length; r++) rows[r] = new Row(this, raw[r], r);
      this._rows = rows;
    }
    return this._rows;
  }

  /** The view of one row. */
  row(rowIndex) {
    return this.rows()[rowIndex];
  }

  [Symbol.iterator]() {
    return this.rows()[Symbol.iterator]();
  }

  /** Every value of one column, converted, in row order. */
  column(name) {
    const i = this._requireIndex(name);
    const raw = this.raw;
    const d = this._decoders[i];
    const out = new Array(raw.length);
    if (d === null) {
      for (let r = 0; r < raw.length; r++) {
        const v = raw[r][i];
        out[r] = v === undefined ? null : v;
      }
      return out;
    }
    for (let r = 0; r < raw.length; r++) {
      const v = raw[r][i];
      out[r] = v === null || v === undefined ? null : d(v);
    }
    return out;
  }

  /** Every value of one column as it is on the wire (no conversion). */
  rawColumn(name) {
    const i = this._requireIndex(name);
    const raw = this.raw;
    const out = new Array(raw.length);
    for (let r = 0; r < raw.length; r++) out[r] = raw[r][i];
    return out;
  }

  /** Every row as a plain object of native values. */
  toObjects() {
    const rows = this.rows();
    const out = new Array(rows.length);
    for (let r = 0; r < rows.length; r++) out[r] = rows[r].toObject();
    return out;
  }

  /**
   * Every row as a plain object of JSON values: integers as numbers (strings beyond 2^53),
   * floats as numbers ("NaN", "Infinity" as strings), decimals, dates and timestamps
   * (RFC 3339) as strings, bytes as base64, json as the document. Costs no conversion.
   */
  toJSON() {
    const raw = this.raw;
    const out = new Array(raw.length);
    for (let r = 0; r < raw.length; r++) out[r] = this._rowJSON(raw[r]);
    return out;
  }

  _rowJSON(values) {
    if (this._index === null) this._meta();
    const names = this._names;
    const obj = {};
    if (this._anyColumns) {
      const cols = this.columns;
      for (let i = 0; i < names.length; i++) obj[names[i]] = cols[i].valueType === 'any' ? anyToJSON(values[i]) : values[i];
    } else {
      for (let i = 0; i < names.length; i++) obj[names[i]] = values[i];
    }
    return obj;
  }
}

/** A view of one row of a Batch (made by `batch.rows()`). */
export class Row {
  constructor(batch, values, index) {
    this.batch = batch;
    /** The row's wire values, in column order. */
    this.values = values;
    /** The row's position in its batch. */
    this.index = index;
  }

  /** The value of column `name`, converted (null for null). Throws for an unknown column. */
  get(name) {
    const b = this.batch;
    let i = b._index[name];
    if (i === undefined) i = b._requireIndex(name);
    const v = this.values[i];
    if (v === null || v === undefined) return null;
    const d = b._decoders[i];
    return d === null ? v : d(v);
  }

  /** Whether the batch has a column `name`. */
  has(name) {
    return this.batch.columnIndex(name) >= 0;
  }

  /** The value at column position `i`, converted. */
  getAt(i) {
    const v = this.values[i];
    if (v === null || v === undefined) return null;
    const d = this.batch._decoders[i];
    return d === null ? v : d(v);
  }

  /** The wire value of column `name` (no conversion). */
  raw(name) {
    return this.values[this.batch._requireIndex(name)];
  }

  /** `{ column: native value }` for every column. */
  toObject() {
    const b = this.batch;
    const names = b._names;
    const decoders = b._decoders;
    const values = this.values;
    const obj = {};
    for (let i = 0; i < names.length; i++) {
      const v = values[i];
      const d = decoders[i];
      obj[names[i]] = v === null || v === undefined ? null : d === null ? v : d(v);
    }
    return obj;
  }

  /** `{ column: JSON value }` (see Batch.toJSON); `JSON.stringify(row)` uses it. */
  toJSON() {
    return this.batch._rowJSON(this.values);
  }
}

/** Same as `new Batch(rowBatch)`. */
export function decodeBatch(rowBatch) {
  return Batch.from(rowBatch);
}

// ---------------------------------------------------------------------------------------
// Batches (encoding, for sources)

function typeName(v) {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (v instanceof Date) return 'Date';
  if (v instanceof Uint8Array) return 'Uint8Array';
  return typeof v;
}

function encodeInteger(v) {
  if (typeof v === 'number') {
    if (!Number.isInteger(v)) throw new TypeError(`${v} is not an integer`);
    return Number.isSafeInteger(v) ? v : BigInt(v).toString();
  }
  if (typeof v === 'bigint') {
    if (v > 9223372036854775807n || v < -9223372036854775808n) throw new TypeError(`${v} is beyond 64 bits`);
    return v <= MAX_SAFE_BIG && v >= MIN_SAFE_BIG ? Number(v) : v.toString();
  }
  if (typeof v === 'string' && /^-?\d+$/.test(v)) return encodeInteger(BigInt(v));
  if (typeof v === 'boolean') return v ? 1 : 0;
  throw new TypeError(`expected an integer, got ${typeName(v)}`);
}

function encodeFloat(v) {
  if (typeof v === 'bigint') v = Number(v);
  if (typeof v === 'number') {
    if (Number.isFinite(v)) return v;
    return Number.isNaN(v) ? 'NaN' : v > 0 ? 'Infinity' : '-Infinity';
  }
  if (v === 'NaN' || v === 'Infinity' || v === '-Infinity') return v;
  if (typeof v === 'string' && v.trim() !== '' && !Number.isNaN(Number(v))) return encodeFloat(Number(v));
  throw new TypeError(`expected a number, got ${typeName(v)}`);
}

const DECIMAL_RE = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

function encodeDecimal(v) {
  if (typeof v === 'string') {
    if (!DECIMAL_RE.test(v)) throw new TypeError(`${JSON.stringify(v)} is not a decimal`);
    return v;
  }
  if (typeof v === 'bigint') return v.toString();
  if (typeof v === 'number' && Number.isFinite(v)) return String(v);
  throw new TypeError(`expected a decimal string, got ${typeName(v)}`);
}

function encodeText(v) {
  if (typeof v === 'string') return v;
  throw new TypeError(`expected a string, got ${typeName(v)}`);
}

function encodeBoolean(v) {
  if (typeof v === 'boolean') return v;
  throw new TypeError(`expected a boolean, got ${typeName(v)}`);
}

function encodeBytes(v) {
  if (v instanceof Uint8Array || v instanceof ArrayBuffer) return base64Encode(v);
  if (ArrayBuffer.isView(v)) return base64Encode(new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
  throw new TypeError(`expected a Uint8Array, got ${typeName(v)}`);
}

function encodeTimestamp(v) {
  if (v instanceof Timestamp) return v.toJSON();
  if (v instanceof Date) {
    if (Number.isNaN(v.getTime())) throw new TypeError('invalid Date');
    return v.toISOString();
  }
  if (typeof v === 'string') return parseTimestamp(v).toJSON();
  if (typeof v === 'number') return encodeTimestamp(new Date(v));
  throw new TypeError(`expected a Date, got ${typeName(v)}`);
}

const DATE_RE = /^\d{4}-\d{2}-\d{2}$/;

function encodeDate(v) {
  if (typeof v === 'string') {
    if (!DATE_RE.test(v)) throw new TypeError(`${JSON.stringify(v)} is not a YYYY-MM-DD date`);
    return v;
  }
  if (v instanceof Date) return dateOnly(v);
  throw new TypeError(`expected a YYYY-MM-DD string, got ${typeName(v)}`);
}

function encodeJson(v) {
  // Round trip now so that what cannot be JSON (BigInt, cycles) fails here, naming the cell.
  return JSON.parse(jsonStringify(v === undefined ? null : v));
}

function encodeAny(v) {
  switch (typeof v) {
    case 'boolean':
    case 'string':
      return v;
    case 'number':
      if (Number.isFinite(v)) return Number.isInteger(v) && !Number.isSafeInteger(v) ? { float: v } : v;
      return { float: encodeFloat(v) };
    case 'bigint': {
      const e = encodeInteger(v);
      return typeof e === 'number' ? e : { integer: e };
    }
  }
  if (v instanceof Date) return { timestamp: encodeTimestamp(v) };
  if (v instanceof Uint8Array || v instanceof ArrayBuffer) return { bytes: base64Encode(v) };
  return { json: encodeJson(v) };
}

const ENCODERS = {
  any: encodeAny,
  boolean: encodeBoolean,
  integer: encodeInteger,
  float: encodeFloat,
  decimal: encodeDecimal,
  text: encodeText,
  bytes: encodeBytes,
  timestamp: encodeTimestamp,
  date: encodeDate,
  json: encodeJson,
};

/** One native value to its wire value (JSON row encoding) for a value type; null stays null. */
export function encodeValue(valueType, value) {
  if (value === null || value === undefined) return null;
  const e = ENCODERS[valueType];
  if (!e) throw new TypeError(`unknown value type ${JSON.stringify(valueType)}`);
  return e(value);
}

/**
 * Columns in the WIT shape `{ name, valueType, nullable }` from that shape or the shorthand
 * `{ name, type, nullable? }` (nullable by default).
 */
export function normalizeColumns(columns) {
  if (!Array.isArray(columns)) throw new TypeError('columns must be an array');
  return columns.map((c, i) => {
    if (!c || typeof c.name !== 'string' || c.name === '') throw new TypeError(`column ${i}: needs a name`);
    const valueType = c.valueType !== undefined ? c.valueType : c.type;
    if (VALUE_TYPES.indexOf(valueType) < 0) throw new TypeError(`column ${c.name}: unknown value type ${JSON.stringify(valueType)} (one of ${VALUE_TYPES.join(', ')})`);
    return { name: c.name, valueType, nullable: c.nullable === undefined ? true : !!c.nullable };
  });
}

/**
 * Rows (arrays in column order, or objects keyed by column name) to a WIT row-batch in the
 * JSON row encoding. A value that does not fit its column throws a bad-row error naming it.
 */
export function encodeBatch(columns, rows) {
  const cols = normalizeColumns(columns);
  const n = cols.length;
  const encoders = cols.map((c) => ENCODERS[c.valueType]);
  const out = new Array(rows.length);
  for (let r = 0; r < rows.length; r++) {
    const row = rows[r];
    const isArray = Array.isArray(row);
    if (!isArray && (row === null || typeof row !== 'object')) throw badRow(r, null, `row ${r} is ${typeName(row)}, not an object or array`);
    const values = new Array(n);
    for (let i = 0; i < n; i++) {
      const c = cols[i];
      const v = isArray ? row[i] : row[c.name];
      if (v === null || v === undefined) {
        if (!c.nullable) throw badRow(r, null, `column ${c.name} is not nullable but the row has no value`);
        values[i] = null;
        continue;
      }
      try {
        values[i] = encoders[i](v);
      } catch (e) {
        throw badRow(r, null, `column ${c.name} (${c.valueType}): ${e && e.message ? e.message : e}`);
      }
    }
    out[r] = values;
  }
  return { columns: cols, rowCount: rows.length, payload: UTF8_ENCODER.encode(JSON.stringify(out)) };
}

// ---------------------------------------------------------------------------------------
// Configuration

const CONFIG_TYPES = ['string', 'number', 'integer', 'boolean', 'object', 'array', 'any'];

function isPlainObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function typeMatches(type, v) {
  switch (type) {
    case 'string':
      return typeof v === 'string';
    case 'number':
      return typeof v === 'number' && Number.isFinite(v);
    case 'integer':
      return typeof v === 'number' && Number.isInteger(v);
    case 'boolean':
      return typeof v === 'boolean';
    case 'object':
      return isPlainObject(v);
    case 'array':
      return Array.isArray(v);
    default:
      return true;
  }
}

function describe(v) {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'object') return 'a table';
  if (typeof v === 'string') return `the string ${JSON.stringify(v)}`;
  return `${typeof v} ${String(v)}`;
}

function joinField(path, key) {
  return path ? `${path}.${key}` : key;
}

function clone(v) {
  return v === undefined || v === null || typeof v !== 'object' ? v : JSON.parse(JSON.stringify(v));
}

function checkValue(desc, v, path, errors, root) {
  const type = desc.type || 'any';
  if (!typeMatches(type, v)) {
    errors.push(configError(path, `expected ${type === 'object' ? 'a table' : type === 'array' ? 'an array' : type === 'integer' ? 'an integer' : `a ${type}`}, got ${describe(v)}`));
    return undefined;
  }
  if (desc.enum && desc.enum.indexOf(v) < 0) {
    errors.push(configError(path, `must be one of ${desc.enum.map((x) => JSON.stringify(x)).join(', ')}, got ${JSON.stringify(v)}`));
    return undefined;
  }
  if (typeof v === 'number') {
    if (desc.min !== undefined && v < desc.min) errors.push(configError(path, `must be at least ${desc.min}, got ${v}`));
    if (desc.max !== undefined && v > desc.max) errors.push(configError(path, `must be at most ${desc.max}, got ${v}`));
  }
  if (typeof v === 'string') {
    if (desc.nonEmpty && v.trim() === '') errors.push(configError(path, 'must not be empty'));
    if (desc.pattern && !desc.pattern.test(v)) errors.push(configError(path, desc.patternMessage || `${JSON.stringify(v)} does not match ${desc.pattern}`));
  }
  let out = v;
  if (type === 'object' && desc.fields) {
    out = checkFields(desc.fields, v, path, errors, desc.allowUnknown, root);
  } else if (type === 'object' && desc.values) {
    out = {};
    for (const k of Object.keys(v)) {
      const x = checkValue(desc.values, v[k], joinField(path, k), errors, root);
      if (x !== undefined) out[k] = x;
    }
  } else if (type === 'array' && desc.items) {
    out = [];
    for (let i = 0; i < v.length; i++) out.push(checkValue(desc.items, v[i], `${path}[${i}]`, errors, root));
  }
  if (desc.check) {
    const problems = desc.check(out, root);
    for (const p of problemsOf(problems)) errors.push(typeof p === 'string' ? configError(path, p) : configError(p.field === undefined ? path : p.field, p.message));
  }
  return out;
}

function problemsOf(p) {
  if (p === undefined || p === null || p === true || p === '') return [];
  if (Array.isArray(p)) return p;
  return [p];
}

function checkFields(fields, obj, path, errors, allowUnknown, root) {
  const out = {};
  for (const key of Object.keys(fields)) {
    const desc = fields[key];
    const field = joinField(path, key);
    if (!(key in obj) || obj[key] === undefined) {
      if (desc.required) errors.push(configError(field, desc.requiredMessage || 'is required'));
      else if (desc.default !== undefined) out[key] = clone(desc.default);
      continue;
    }
    const v = checkValue(desc, obj[key], field, errors, root === undefined ? obj : root);
    if (v !== undefined) out[key] = v;
  }
  for (const key of Object.keys(obj)) {
    if (key in fields) continue;
    if (allowUnknown) out[key] = obj[key];
    else errors.push(configError(joinField(path, key), `unknown field (known: ${Object.keys(fields).join(', ') || 'none'})`));
  }
  return out;
}

/**
 * Parses config JSON text and checks it against `fields`, a description of its fields:
 * `{ name: { type, required?, default?, enum?, min?, max?, pattern?, patternMessage?,
 * nonEmpty?, fields? (object), values? (map of one kind), items? (array), allowUnknown?,
 * check?(value, config) -> message(s), description? } }`. Returns `{ config, errors }`:
 * the config with defaults filled in, and every problem as a config-error naming its
 * dotted field (`headers.X`, `columns[0].type`). Unknown fields are errors unless
 * `options.allowUnknown`.
 */
export function parseConfig(text, fields, options) {
  const errors = [];
  let value;
  if (typeof text === 'string') {
    if (text.trim() === '') value = {};
    else {
      try {
        value = JSON.parse(text);
      } catch (e) {
        return { config: null, errors: [configError('', `not valid JSON: ${e.message}`)] };
      }
    }
  } else {
    value = text === undefined || text === null ? {} : text;
  }
  if (!isPlainObject(value)) return { config: null, errors: [configError('', `expected a table, got ${describe(value)}`)] };
  if (!fields) return { config: value, errors };
  const config = checkFields(fields, value, '', errors, options && options.allowUnknown, value);
  return { config, errors };
}

function schemaOf(desc) {
  const s = {};
  const type = desc.type || 'any';
  if (type !== 'any') s.type = type;
  if (desc.description) s.description = desc.description;
  if (desc.enum) s.enum = desc.enum.slice();
  if (desc.default !== undefined) s.default = clone(desc.default);
  if (desc.min !== undefined) s.minimum = desc.min;
  if (desc.max !== undefined) s.maximum = desc.max;
  if (desc.nonEmpty) s.minLength = 1;
  if (desc.pattern) s.pattern = desc.pattern.source;
  if (type === 'object' && desc.fields) Object.assign(s, objectSchema(desc.fields, desc.allowUnknown));
  else if (type === 'object' && desc.values) s.additionalProperties = schemaOf(desc.values);
  if (type === 'array' && desc.items) s.items = schemaOf(desc.items);
  return s;
}

function objectSchema(fields, allowUnknown) {
  const properties = {};
  const required = [];
  for (const key of Object.keys(fields)) {
    properties[key] = schemaOf(fields[key]);
    if (fields[key].required) required.push(key);
  }
  const s = { type: 'object', properties };
  if (required.length) s.required = required;
  if (!allowUnknown) s.additionalProperties = false;
  return s;
}

/** The JSON Schema (draft 2020-12) text of a config described as for `parseConfig`. */
export function configSchema(fields, options) {
  const o = options || {};
  const s = { $schema: 'https://json-schema.org/draft/2020-12/schema' };
  if (o.title) s.title = o.title;
  if (o.description) s.description = o.description;
  Object.assign(s, objectSchema(fields || {}, o.allowUnknown));
  return JSON.stringify(s);
}

// ---------------------------------------------------------------------------------------
// HTTP through the host

const HTTP_ERROR_TAGS = ['denied', 'invalid-request', 'connection', 'timeout'];

function httpErrorToPluginError(err, what) {
  const prefix = what ? `${what}: ` : '';
  let e;
  switch (err.tag) {
    case 'connection':
      e = retryable(`${prefix}connection failed: ${err.val}`);
      break;
    case 'timeout':
      e = retryable(`${prefix}timed out: ${err.val}`);
      break;
    case 'denied':
      e = fatal(`${prefix}denied by the host: ${err.val} (grant the host:port in the plugin's grants.network)`);
      break;
    default:
      e = fatal(`${prefix}invalid request: ${err.val}`);
  }
  e.httpError = { tag: err.tag, val: err.val };
  return e;
}

/** An HTTP response from `httpSend`. */
export class HttpResponse {
  constructor(r) {
    this.status = r.status;
    this.headers = r.headers;
    this.body = r.body;
  }

  /** 200-299. */
  get ok() {
    return this.status >= 200 && this.status < 300;
  }

  /** A header's value (case-insensitive), or null. */
  header(name) {
    const lower = name.toLowerCase();
    for (const h of this.headers) if (h.name.toLowerCase() === lower) return h.value;
    return null;
  }

  /** The body as UTF-8 text. */
  text() {
    return UTF8_DECODER.decode(this.body);
  }

  /** The body parsed as JSON. */
  json() {
    return JSON.parse(this.text());
  }
}

function headerList(headers) {
  if (!headers) return [];
  if (Array.isArray(headers)) return headers.map((h) => ({ name: str(h.name), value: str(h.value) }));
  return Object.keys(headers).map((name) => ({ name, value: str(headers[name]) }));
}

/**
 * Sends an HTTP request through the host (`http-send`; the URL's host:port must be granted).
 * `request`: `{ method = 'GET', url, headers (object or [{name, value}]), body (string or
 * Uint8Array), json (a value sent as JSON, sets content-type), timeoutMs }`. Returns an
 * HttpResponse whatever its status. Throws a PluginError when no response came:
 * `retryable` for connection failures and timeouts, `fatal` for a denied or invalid request;
 * its `httpError` holds the host's `{ tag, val }`.
 */
export function httpSend(request) {
  if (!HOST || typeof HOST.httpSend !== 'function') throw fatal('no host: define the plugin with { host } (import * as host from "backflow:plugin/host@0.2.0")');
  const method = (request.method || 'GET').toUpperCase();
  const headers = headerList(request.headers);
  let body = request.body;
  if (request.json !== undefined) {
    try {
      body = JSON.stringify(request.json);
    } catch (_) {
      body = jsonStringify(request.json); // BigInt or bytes inside: slower, with a replacer
    }
    if (!headers.some((h) => h.name.toLowerCase() === 'content-type')) headers.push({ name: 'content-type', value: 'application/json' });
  }
  if (body === undefined || body === null) body = new Uint8Array(0);
  else if (typeof body === 'string') body = UTF8_ENCODER.encode(body);
  const req = {
    method,
    url: str(request.url),
    headers,
    body,
    timeoutMs: request.timeoutMs === undefined || request.timeoutMs === null ? undefined : toU32(request.timeoutMs),
  };
  let res;
  try {
    res = HOST.httpSend(req);
  } catch (e) {
    const p = e && typeof e === 'object' && Object.prototype.hasOwnProperty.call(e, 'payload') ? e.payload : e;
    if (p && typeof p === 'object' && HTTP_ERROR_TAGS.indexOf(p.tag) >= 0) throw httpErrorToPluginError(p, `${method} ${req.url}`);
    throw e;
  }
  return new HttpResponse(res);
}

/** `Retry-After` (seconds or an HTTP date) in milliseconds from now, or undefined. */
export function retryAfterMs(value) {
  if (value === null || value === undefined) return undefined;
  const v = String(value).trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const at = Date.parse(v);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, at - nowMs());
}

/**
 * The plugin error an HTTP status calls for, or null for the others: 429 -> rate-limited
 * (with Retry-After), 408 and 5xx -> retryable. Use it for "nothing of the batch was written".
 */
export function errorForStatus(response, what) {
  const prefix = what ? `${what}: ` : '';
  const s = response.status;
  if (s === 429) return rateLimited(`${prefix}HTTP 429 ${snippet(response)}`.trim(), retryAfterMs(response.header('retry-after')));
  if (s === 408 || s >= 500) return retryable(`${prefix}HTTP ${s} ${snippet(response)}`.trim());
  return null;
}

/** The start of a response body, for messages. */
export function snippet(response, max) {
  const limit = max || 300;
  let text;
  try {
    text = response.text();
  } catch (_) {
    return '';
  }
  return text.length > limit ? text.slice(0, limit) + '…' : text;
}

// ---------------------------------------------------------------------------------------
// Quality checks and approval policies: result values

/** A check result: pass. */
export function pass(message) {
  return { verdict: 'pass', message: str(message), samples: [] };
}

/** A check result: warn, with sample rows (Rows, objects or JSON strings). */
export function warn(message, samples) {
  return { verdict: 'warn', message: str(message), samples: sampleStrings(samples) };
}

/** A check result: fail, with sample rows (Rows, objects or JSON strings). */
export function fail(message, samples) {
  return { verdict: 'fail', message: str(message), samples: sampleStrings(samples) };
}

function sampleStrings(samples) {
  if (!samples) return [];
  return Array.from(samples, (s) => (typeof s === 'string' ? s : jsonStringify(s)));
}

/** A policy decision: approve. */
export function approve(reason) {
  return { tag: 'approve', val: str(reason) };
}

/** A policy decision: reject. */
export function reject(reason) {
  return { tag: 'reject', val: str(reason) };
}

/**
 * A policy decision: require `count` approvals from any of `roles` (admin, approver,
 * contributor, viewer); `options.allowSelfApproval` (default false), `options.reason`.
 */
export function requireApprovals(count, roles, options) {
  const o = options || {};
  return {
    tag: 'require',
    val: { count: toU32(count), roles: Array.from(roles || []), allowSelfApproval: !!o.allowSelfApproval, reason: str(o.reason) },
  };
}

// ---------------------------------------------------------------------------------------
// Defining a plugin

const KINDS = ['source', 'destination', 'quality-check', 'approval-policy'];
const OPERATIONS = ['insert', 'update', 'delete', 'append'];

function buildSpec(kind, def) {
  const s = def.spec || {};
  if (typeof s.name !== 'string' || s.name === '') throw new TypeError('spec.name is required');
  let schema = s.configSchema;
  if (schema === undefined) schema = def.config ? configSchema(def.config, { title: s.name, allowUnknown: def.allowUnknownConfig }) : '{"type":"object"}';
  else if (typeof schema !== 'string') schema = JSON.stringify(schema);
  const operations = Array.from(s.operations || []);
  for (const op of operations) if (OPERATIONS.indexOf(op) < 0) throw new TypeError(`spec.operations: unknown operation ${JSON.stringify(op)}`);
  let rate;
  if (s.defaultRateLimit) {
    const r = s.defaultRateLimit;
    rate = {
      requestsPerSecond: r.requestsPerSecond === undefined || r.requestsPerSecond === null ? undefined : Number(r.requestsPerSecond),
      rowsPerSecond: r.rowsPerSecond === undefined || r.rowsPerSecond === null ? undefined : Number(r.rowsPerSecond),
    };
  }
  return Object.freeze({
    name: s.name,
    version: str(s.version || '0.1.0'),
    kind,
    description: str(s.description),
    configSchema: schema,
    operations,
    maxBatchSize: toU32(s.maxBatchSize || 0),
    defaultRateLimit: rate,
    rowEncoding: 'json',
  });
}

function makeConfigLoader(def) {
  function problems(text) {
    const { config, errors } = parseConfig(text, def.config, { allowUnknown: def.allowUnknownConfig });
    if (def.validate && config !== null) {
      const add = (problems) => {
        for (const p of problemsOf(problems)) errors.push(typeof p === 'string' ? configError('', p) : configError(p.field, p.message));
      };
      if (errors.length === 0) add(def.validate(config));
      else {
        // Every problem at once: validate sees the fields that passed (the others are left
        // out); as it may count on those, what it throws here is not reported.
        try {
          add(def.validate(config));
        } catch (_) {
          // the problems found so far are reported
        }
      }
    }
    return { config, errors };
  }
  return {
    check(text) {
      try {
        return problems(text).errors;
      } catch (e) {
        const p = toPluginError(e);
        return [p.tag === 'bad-config' ? p.val : configError('', `checking the config failed: ${p.tag === 'fatal' ? p.val : describePluginError(p.tag, p.val)}`)];
      }
    },
    load(text) {
      const { config, errors } = problems(text);
      if (errors.length) {
        const first = errors[0];
        const more = errors.length > 1 ? ` (and ${errors.length - 1} more problem${errors.length > 2 ? 's' : ''})` : '';
        throw badConfig(first.field, first.message + more);
      }
      return config;
    },
  };
}

/**
 * Inside a component built without wasi:http (as backflow requires), calling `fetch` traps
 * the instance, which no try/catch can stop. With a host installed, `fetch` throws instead.
 */
function disableFetch() {
  try {
    globalThis.fetch = function fetch() {
      throw fatal('fetch is not available in a backflow plugin (it has no wasi:http): use httpSend from the SDK, which goes through the host');
    };
  } catch (_) {
    // a read-only global: leave it
  }
}

function pluginExport(kind, def) {
  if (def.host) {
    setHost(def.host);
    disableFetch();
  }
  const spec = buildSpec(kind, def);
  const loader = makeConfigLoader(def);
  const plugin = {
    spec() {
      return spec;
    },
    checkConfig(config) {
      const errs = loader.check(config);
      return errs.map((e) => configError(e.field, e.message));
    },
  };
  return { spec, loader, plugin };
}

function requireFn(def, name) {
  if (typeof def[name] !== 'function') throw new TypeError(`the plugin definition needs a function \`${name}\``);
}

function checkOutcomes(outcomes, rowCount) {
  if (!Array.isArray(outcomes)) throw fatal(`write returned ${typeName(outcomes)}, not an array of row outcomes (use outcome.acceptAll(batch))`);
  if (outcomes.length !== rowCount) throw fatal(`write returned ${outcomes.length} outcomes for ${rowCount} rows`);
  // Contract 0.2.0: an empty list for a non-empty batch means every row was accepted.
  // Lowering one outcome per row costs the bindings about 3 µs a row, more than decoding it.
  // Whether every outcome is the one ACCEPTED value is asked of a Set, built natively: a
  // loop over the outcomes in interpreted JavaScript costs about 1 µs a row.
  // (Only tried when the first and last outcomes are ACCEPTED, so per-row answers do not
  // pay for the Set.)
  if (rowCount > 0 && outcomes[0] === ACCEPTED && outcomes[rowCount - 1] === ACCEPTED) {
    const distinct = new Set(outcomes);
    if (distinct.size === 1 && distinct.has(ACCEPTED)) return [];
  }
  let allAccepted = true;
  for (let i = 0; i < outcomes.length; i++) {
    const o = outcomes[i];
    if (o === ACCEPTED) continue;
    if (o && o.tag === 'accepted') continue;
    allAccepted = false;
    if (o && (o.tag === 'rejected' || o.tag === 'retryable') && typeof o.val === 'string') continue;
    if (o && (o.tag === 'rejected' || o.tag === 'retryable')) {
      outcomes[i] = { tag: o.tag, val: str(o.val) };
      continue;
    }
    throw fatal(`write: outcome ${i} is not a row outcome: ${errorText(o)}`);
  }
  return allAccepted ? [] : outcomes;
}

/**
 * A destination plugin. `def`: `{ host, spec: { name, version, description, operations,
 * maxBatchSize, defaultRateLimit }, config (fields, see parseConfig), validate?(config),
 * open(config, context) -> { write(op, batch: Batch) -> outcomes, finish?() } }`.
 * Returns `{ plugin, destination }`: export both from the component's entry module.
 */
export function defineDestination(def) {
  requireFn(def, 'open');
  const { loader, plugin } = pluginExport('destination', def);
  class Writer {
    constructor(inner) {
      this._inner = inner;
    }

    static open(config, context) {
      return guardThen(
        () => def.open(loader.load(config), context),
        (inner) => {
          if (!inner || typeof inner.write !== 'function') throw fatal('open must return an object with a write(op, batch) method');
          return new Writer(inner);
        },
      );
    }

    write(op, batch) {
      const rowCount = batch.rowCount;
      return guardThen(
        () => this._inner.write(op, new Batch(batch)),
        (outcomes) => checkOutcomes(outcomes, rowCount),
      );
    }

    finish() {
      return guardThen(
        () => (typeof this._inner.finish === 'function' ? this._inner.finish() : undefined),
        () => undefined,
      );
    }
  }
  return { plugin, destination: { Writer } };
}

/**
 * A source plugin. `def.open(config, query)` returns `{ columns, nextBatch(maxRows) }`:
 * `columns` an array (or a function returning one) of `{ name, type, nullable? }`;
 * `nextBatch` returns rows (objects or arrays), a ready row-batch, or null/[] at the end.
 */
export function defineSource(def) {
  requireFn(def, 'open');
  const { loader, plugin } = pluginExport('source', def);
  class Reader {
    constructor(inner, columns) {
      this._inner = inner;
      this._columns = columns;
      this._done = false;
    }

    static open(config, query) {
      return guardThen(
        () => def.open(loader.load(config), query),
        (inner) => {
          if (!inner || typeof inner.nextBatch !== 'function') throw fatal('open must return an object with columns and nextBatch(maxRows)');
          const cols = typeof inner.columns === 'function' ? inner.columns() : inner.columns;
          return new Reader(inner, normalizeColumns(cols || []));
        },
      );
    }

    columns() {
      return this._columns;
    }

    nextBatch(maxRows) {
      if (this._done) return undefined;
      return guardThen(
        () => this._inner.nextBatch(maxRows),
        (rows) => {
          if (rows === null || rows === undefined) {
            this._done = true;
            return undefined;
          }
          if (Array.isArray(rows)) {
            if (rows.length === 0) {
              this._done = true;
              return undefined;
            }
            if (rows.length > maxRows) throw fatal(`nextBatch returned ${rows.length} rows, more than max-rows ${maxRows}`);
            return encodeBatch(this._columns, rows);
          }
          if (rows && rows.payload !== undefined && typeof rows.rowCount === 'number') {
            return { columns: rows.columns ? normalizeColumns(rows.columns) : this._columns, rowCount: rows.rowCount, payload: typeof rows.payload === 'string' ? UTF8_ENCODER.encode(rows.payload) : rows.payload };
          }
          throw fatal(`nextBatch returned ${typeName(rows)}: expected an array of rows, a batch or null`);
        },
      );
    }
  }
  return { plugin, source: { Reader } };
}

function numbersOfPlan(plan) {
  return {
    syncName: plan.syncName,
    columns: plan.columns,
    snapshotRows: Number(plan.snapshotRows),
    modelRows: Number(plan.modelRows),
    added: Number(plan.added),
    changed: Number(plan.changed),
    removed: Number(plan.removed),
  };
}

function checkResultOf(r) {
  if (!r || typeof r !== 'object' || ['pass', 'warn', 'fail'].indexOf(r.verdict) < 0) throw fatal(`finish returned ${errorText(r)}: expected pass(..), warn(..) or fail(..)`);
  return { verdict: r.verdict, message: str(r.message), samples: sampleStrings(r.samples) };
}

/**
 * A quality check. `def.open(config, plan)` (plan's counts are numbers) returns
 * `{ observe(kind, after: Batch, before: Batch|null), finish() -> pass()/warn()/fail() }`.
 * Returns `{ plugin, qualityCheck }`.
 */
export function defineQualityCheck(def) {
  requireFn(def, 'open');
  const { loader, plugin } = pluginExport('quality-check', def);
  class Checker {
    constructor(inner) {
      this._inner = inner;
    }

    static open(config, plan) {
      return guardThen(
        () => def.open(loader.load(config), numbersOfPlan(plan)),
        (inner) => {
          if (!inner || typeof inner.finish !== 'function') throw fatal('open must return an object with observe(kind, after, before) and finish()');
          return new Checker(inner);
        },
      );
    }

    observe(kind, after, before) {
      return guardThen(
        () => (typeof this._inner.observe === 'function' ? this._inner.observe(kind, new Batch(after), before ? new Batch(before) : null) : undefined),
        () => undefined,
      );
    }

    finish() {
      return guardThen(
        () => this._inner.finish(),
        checkResultOf,
      );
    }
  }
  return { plugin, qualityCheck: { Checker } };
}

function numbersOfRequest(req) {
  return {
    kind: req.kind,
    author: req.author,
    authorRole: req.authorRole,
    description: req.description,
    syncs: req.syncs.map((s) => ({
      syncName: s.syncName,
      destination: s.destination,
      mode: s.mode,
      added: Number(s.added),
      changed: Number(s.changed),
      removed: Number(s.removed),
      columnLabels: s.columnLabels,
    })),
  };
}

function decisionOf(d) {
  if (d && d.tag === 'approve') return approve(d.val);
  if (d && d.tag === 'reject') return reject(d.val);
  if (d && d.tag === 'require' && d.val) {
    const v = d.val;
    return requireApprovals(v.count, v.roles, { allowSelfApproval: v.allowSelfApproval, reason: v.reason });
  }
  throw fatal(`evaluate returned ${errorText(d)}: expected approve(..), requireApprovals(..) or reject(..)`);
}

/**
 * An approval policy. `def.evaluate(config, request)` (counts as numbers) returns
 * approve(reason), requireApprovals(count, roles, { allowSelfApproval, reason }) or
 * reject(reason). Returns `{ plugin, approvalPolicy }`.
 */
export function defineApprovalPolicy(def) {
  requireFn(def, 'evaluate');
  const { loader, plugin } = pluginExport('approval-policy', def);
  const approvalPolicy = {
    evaluate(config, request) {
      return guardThen(
        () => def.evaluate(loader.load(config), numbersOfRequest(request)),
        decisionOf,
      );
    },
  };
  return { plugin, approvalPolicy };
}

/** Any kind: `def.kind` is source, destination, quality-check or approval-policy. */
export function definePlugin(def) {
  switch (def.kind) {
    case 'source':
      return defineSource(def);
    case 'destination':
      return defineDestination(def);
    case 'quality-check':
      return defineQualityCheck(def);
    case 'approval-policy':
      return defineApprovalPolicy(def);
    default:
      throw new TypeError(`kind must be one of ${KINDS.join(', ')}`);
  }
}
