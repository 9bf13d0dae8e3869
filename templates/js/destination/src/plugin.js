// @ts-check
// {{name}}: a destination that POSTs each batch as one JSON request:
//   {"operation": "insert", "rows": [{"id": 1, "email": "ada@example.com", ...}, ...]}
// Values are JSON: integers as numbers (beyond 2^53 as strings), decimals as strings,
// timestamps as RFC 3339 strings, dates as "YYYY-MM-DD", bytes as base64, json inline.
//
// What the HTTP status means for the rows: 2xx every row accepted; 429 rate-limited (the
// engine waits Retry-After, then retries); 408, 5xx, connection failures and timeouts
// retryable; 401 and 403 bad config (the credentials in `headers`: nothing will work until a
// human fixes them); any other 4xx every row rejected with the status and the response body.
import * as host from 'backflow:plugin/host@0.2.0';
import { defineDestination, httpSend, errorForStatus, badConfig, fatal, outcome, snippet } from '../lib/backflow.js';

// Headers the host sets itself and refuses from a plugin.
const HOST_HEADERS = ['host', 'content-length', 'connection', 'transfer-encoding', 'keep-alive', 'upgrade', 'te', 'trailer', 'proxy-connection'];

export const { plugin, destination } = defineDestination({
  host,
  spec: {
    name: '{{name}}',
    version: '0.1.0',
    description: 'POSTs each batch of rows as JSON ({"operation", "rows"}) to an HTTP endpoint.',
    operations: ['insert', 'update', 'delete'],
    maxBatchSize: 500,
  },
  // The config's fields: check-config reports problems by field, `open` gets the config
  // with defaults filled in, and the spec's JSON Schema is generated from this.
  config: {
    url: {
      type: 'string',
      required: true,
      pattern: /^https?:\/\/[^/\s]+/,
      patternMessage: 'must be an http:// or https:// URL',
      description: 'Where to POST the batches; its host:port must be in grants.network.',
    },
    headers: {
      type: 'object',
      values: { type: 'string' },
      default: {},
      description: 'Extra request headers, e.g. {Authorization = "Bearer ..."}.',
    },
  },
  // Checks beyond the fields' types; each problem names its field.
  validate(config) {
    const problems = [];
    for (const name of Object.keys(config.headers)) {
      if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) problems.push({ field: `headers.${name}`, message: 'is not a valid header name' });
      else if (HOST_HEADERS.includes(name.toLowerCase())) problems.push({ field: `headers.${name}`, message: 'is set by the host and cannot be configured' });
    }
    return problems;
  },
  open(config, _context) {
    return {
      write(op, batch) {
        if (batch.rowCount === 0) return [];
        // batch.toJSON(): every row as an object of JSON values, without converting them.
        const body = JSON.stringify({ operation: op, rows: batch.toJSON() });
        const response = httpSend({
          method: 'POST',
          url: config.url,
          headers: { 'content-type': 'application/json', ...config.headers },
          body,
          timeoutMs: 30000,
        });
        if (response.ok) return outcome.acceptAll(batch);
        // 429: rate-limited (Retry-After); 408 and 5xx: retryable. Thrown, they become the
        // call's error: no row of the batch was written.
        const error = errorForStatus(response, `POST ${config.url}`);
        if (error) throw error;
        if (response.status === 401 || response.status === 403) {
          throw badConfig('headers', `POST ${config.url} answered ${response.status}: ${snippet(response)}`);
        }
        if (response.status >= 400) return outcome.rejectAll(batch, `HTTP ${response.status}: ${snippet(response)}`);
        throw fatal(`POST ${config.url}: unexpected HTTP ${response.status} (redirects are not followed: point url at the final address)`);
      },
    };
  },
});
