"""Runs `ais migrate --print-ddl` output (stdin) in chdb, ClickHouse's engine in-process
(a current release), then writes and reads rows the way the ClickHouse store does, so
the DDL generated for current servers is proven against one. Exits 1 on any error."""
import sys

import chdb
from chdb import session

statements = [s.strip() for s in sys.stdin.read().split(";\n") if s.strip()]
if not statements:
    sys.exit("no DDL on stdin")
db = session.Session()
for statement in statements:
    db.query(statement)
print(f"chdb {chdb.__version__}: {len(statements)} statements applied")

checks = [
    "INSERT INTO ais.rollups (tenant, model, minute, log_partition, first_offset, next_offset,"
    " watermark_ms, requests, errors, input_tokens, output_tokens, cache_read_input_tokens,"
    " cost_micros, late_events, partial, written_ms)"
    " VALUES ('t', 'm', 1795341600, 0, 0, 10, 0, 10, 1, 100, 50, 0, 1234, 0, 'x', 1),"
    " ('', '', 1795341600, 0, 0, 10, 1795341600000, 0, 0, 0, 0, 0, 0, 0, '', 1)",
    "INSERT INTO ais.events (tenant, event_id, client_id, timestamp_ms, model, response_model,"
    " provider, operation, latency_ms, ttft_ms, input_tokens, output_tokens,"
    " reasoning_output_tokens, cache_read_input_tokens, cache_creation_input_tokens,"
    " cost_micros, status, error_type, user_id, session_id,"
    " trace_id, span_id, endpoint, region, attribute_keys, attribute_values, log_partition,"
    " log_offset) VALUES ('t', 'id-1', 1, 1795341600123, 'm', NULL, 'openai', NULL, 812.5,"
    " 140, 1200, 250, 100, NULL, 300, 1234, 'ok', NULL, 'u', NULL, NULL, NULL, NULL, NULL,"
    " ['k'], ['v'], 0, 0)",
]
for statement in checks:
    db.query(statement)
answers = {
    "SELECT sum(requests) FROM ais.rollups FINAL WHERE tenant = 't'": "10",
    "SELECT max(next_offset) FROM ais.rollups WHERE tenant = '' AND model = '' AND log_partition = 0": "10",
    "SELECT toString(timestamp) FROM ais.events FINAL WHERE tenant = 't'": '"2026-11-22 10:00:00.123"',
    "SELECT reasoning_output_tokens, cache_creation_input_tokens FROM ais.events FINAL"
    " WHERE tenant = 't'": "100,300",
    "SELECT count() FROM ais.events FINAL WHERE tenant = 't' AND timestamp >= toDateTime(1795341600)"
    " AND timestamp_ms >= 1795341600000": "1",
}
for query, want in answers.items():
    got = str(db.query(query, "CSV")).strip()
    if got != want:
        sys.exit(f"{query}: got {got!r}, want {want!r}")
print("chdb: writes and reads as the store does: ok")
