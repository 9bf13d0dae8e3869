// @ts-check
// {{name}}: an approval policy. A run whose syncs would remove more than `max_removed` rows in
// total needs one approval from an approver or an admin other than its author; every other
// request (smaller runs, configuration changes) is approved.
import * as host from 'backflow:plugin/host@0.2.0';
import { defineApprovalPolicy, approve, requireApprovals } from '../lib/backflow.js';

export const { plugin, approvalPolicy } = defineApprovalPolicy({
  host,
  spec: {
    name: '{{name}}',
    version: '0.1.0',
    description: 'Runs that would remove many rows need an approver.',
  },
  config: {
    max_removed: { type: 'integer', default: 100, min: 0, description: 'The most rows a run may remove, over all its syncs, without an approval.' },
  },
  evaluate(config, request) {
    if (request.kind !== 'run') return approve('configuration changes are not judged by this policy');
    // The counts are numbers (the SDK converts the contract's u64 values).
    const removed = request.syncs.reduce((sum, sync) => sum + sync.removed, 0);
    if (removed > config.max_removed) {
      const syncs = request.syncs.filter((s) => s.removed > 0).map((s) => `${s.syncName}: ${s.removed}`).join(', ');
      return requireApprovals(1, ['approver', 'admin'], {
        allowSelfApproval: false,
        reason: `the run would remove ${removed} rows (${syncs}), more than ${config.max_removed}`,
      });
    }
    return approve(`the run removes ${removed} rows, at most ${config.max_removed}`);
  },
});
