// @ts-check
// {{name}}: a quality check. It fails a run when more than `max_null_percent` percent of the
// rows the run would send (added and changed) have no value in `column`, with up to five of
// those rows as samples; otherwise it passes. It runs before anything is written.
import * as host from 'backflow:plugin/host@0.2.0';
import { defineQualityCheck, badConfig, pass, fail } from '../lib/backflow.js';

const MAX_SAMPLES = 5;

export const { plugin, qualityCheck } = defineQualityCheck({
  host,
  spec: {
    name: '{{name}}',
    version: '0.1.0',
    description: 'Fails a run when too many of the rows it would send have no value in a column.',
  },
  config: {
    column: { type: 'string', required: true, nonEmpty: true, description: 'The field (after mapping) that must have a value.' },
    max_null_percent: { type: 'number', default: 0, min: 0, max: 100, description: 'The largest share of rows without a value, in percent, that still passes.' },
  },
  open(config, plan) {
    // The plan lists the fields the sync's rows carry: a column not among them is a mistake.
    if (!plan.columns.some((c) => c.name === config.column)) {
      throw badConfig('column', `the sync ${plan.syncName} has no field ${JSON.stringify(config.column)} (fields: ${plan.columns.map((c) => c.name).join(', ')})`);
    }
    let rows = 0;
    let nulls = 0;
    const samples = [];
    return {
      observe(kind, after, _before) {
        // Only what the run would send counts; removed rows carry only the key.
        if (kind !== 'added' && kind !== 'changed') return;
        // Wire values: null is null whatever the type, so nothing needs converting.
        const values = after.rawColumn(config.column);
        rows += values.length;
        for (let i = 0; i < values.length; i++) {
          if (values[i] !== null) continue;
          nulls++;
          if (samples.length < MAX_SAMPLES) samples.push(after.row(i)); // as a JSON object
        }
      },
      finish() {
        if (rows === 0) return pass('no added or changed rows');
        const percent = (nulls / rows) * 100;
        const share = `${nulls} of ${rows} added or changed rows (${percent.toFixed(1)}%) have no ${config.column}`;
        if (percent > config.max_null_percent) return fail(`${share}; at most ${config.max_null_percent}% may`, samples);
        return pass(`${share}; within ${config.max_null_percent}%`);
      },
    };
  },
});
