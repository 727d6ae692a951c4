# Copyright: pgdbaas contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test helper: write the task results, the per-host stats and the set_stats data of a playbook run,
as JSON, to $TMOD_RESULTS_FILE: {"results": [...], "stats": {host: {ok, changed, ...}}, "custom": {...}}.
"""

from __future__ import annotations

import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = '''
    name: tmod_results
    type: notification
    short_description: Write task results to the JSON file named by TMOD_RESULTS_FILE
    description:
      - Used by the dbaas.postgresql module tests to read module results.
'''


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'notification'
    CALLBACK_NAME = 'tmod_results'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.results = []

    def _record(self, result, status):
        record = json.loads(self._dump_results(result.result))
        record['failed'] = status == 'failed'
        record['_status'] = status
        record['_task'] = result.task_name
        record['_host'] = result._host.get_name()
        self.results.append(record)

    def v2_runner_on_ok(self, result):
        self._record(result, 'ok')

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, 'failed')

    def v2_runner_on_skipped(self, result):
        self._record(result, 'skipped')

    def v2_runner_on_unreachable(self, result):
        self._record(result, 'unreachable')

    def v2_playbook_on_stats(self, stats):
        data = dict(results=self.results, stats={host: stats.summarize(host) for host in stats.processed},
                    custom=stats.custom)
        with open(os.environ['TMOD_RESULTS_FILE'], 'w') as out:
            json.dump(data, out)
