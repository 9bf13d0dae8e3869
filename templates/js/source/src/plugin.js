// @ts-check
// {{name}}: a source that reads rows from a JSON API. A model's `query` is a path appended to
// `url`; `open` GETs it (through the host: the URL's host:port must be granted) and expects a
// JSON array of objects. `columns` declares the columns and their types; each object's fields
// of those names become a row (a missing field is null).
import * as host from 'backflow:plugin/host@0.2.0';
import { defineSource, httpSend, errorForStatus, fatal, badRow, base64Decode, snippet, VALUE_TYPES, log } from '../lib/backflow.js';

export const { plugin, source } = defineSource({
  host,
  spec: {
    name: '{{name}}',
    version: '0.1.0',
    description: 'Reads rows from a JSON API: GET url + query, a JSON array of objects.',
  },
  config: {
    url: {
      type: 'string',
      required: true,
      pattern: /^https?:\/\/[^/\s]+/,
      patternMessage: 'must be an http:// or https:// URL',
      description: 'The API base URL; a model query (a path) is appended. Its host:port must be in grants.network.',
    },
    columns: {
      type: 'array',
      required: true,
      description: 'The columns, in order: the object fields read from each row.',
      items: {
        type: 'object',
        fields: {
          name: { type: 'string', required: true, nonEmpty: true },
          type: { type: 'string', required: true, enum: [...VALUE_TYPES] },
          nullable: { type: 'boolean', default: true },
        },
      },
      check: (columns) => (columns.length === 0 ? 'needs at least one column' : undefined),
    },
    headers: { type: 'object', values: { type: 'string' }, default: {}, description: 'Extra request headers.' },
  },
  open(config, query) {
    const url = query ? config.url.replace(/\/+$/, '') + (query.startsWith('/') ? query : `/${query}`) : config.url;
    const response = httpSend({ method: 'GET', url, headers: { accept: 'application/json', ...config.headers }, timeoutMs: 60000 });
    const error = errorForStatus(response, `GET ${url}`);
    if (error) throw error;
    if (!response.ok) throw fatal(`GET ${url}: HTTP ${response.status}: ${snippet(response)}`);
    let data;
    try {
      data = response.json();
    } catch (e) {
      throw fatal(`GET ${url}: the response is not JSON: ${e.message}`);
    }
    if (!Array.isArray(data)) throw fatal(`GET ${url}: expected a JSON array of objects, got ${data === null ? 'null' : typeof data}`);
    data.forEach((row, i) => {
      if (row === null || typeof row !== 'object' || Array.isArray(row)) throw badRow(i, null, `item ${i} is not an object`);
    });
    log.debug(`GET ${url}: ${data.length} rows`);
    // JSON has no bytes: a bytes column's values arrive base64-encoded.
    const bytesColumns = config.columns.filter((c) => c.type === 'bytes').map((c) => c.name);
    let next = 0;
    return {
      columns: config.columns,
      // Up to maxRows rows per call; the SDK encodes them by column type (and names the row
      // and column of a value that does not fit). An empty array ends the read.
      nextBatch(maxRows) {
        const rows = data.slice(next, next + maxRows);
        next += rows.length;
        if (bytesColumns.length === 0) return rows;
        return rows.map((row) => {
          const copy = { ...row };
          for (const name of bytesColumns) if (typeof copy[name] === 'string') copy[name] = base64Decode(copy[name]);
          return copy;
        });
      },
    };
  },
});
