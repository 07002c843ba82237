"""Puts each perf sample of `ais serve` in one stage of the pipeline (bench/profile.sh).

Input: `perf script -F comm,ip,sym --no-inline` output, the events accepted while the
samples were taken, and the sampling frequency. A sample's stage is the first of
STAGES (most specific first) with a marker in any frame of its stack; CPU time per
stage is samples / frequency, and per event that over the events accepted.
"""

import collections
import sys

STAGES = [
    ("usage ledger", ["UsageBatch"]),
    ("dedup", ["Dedup::", "dedup_hash"]),
    ("dimension rollups", ["DimensionBatch", "ais_rollup::dimensions"]),
    ("price lookup", ["PriceTable"]),
    ("wire encode (log record)", ["ais_model::wire::encode", "postcard::ser"]),
    ("wire decode (stream)", ["ais_model::wire::decode", "postcard::de", "validate_logged"]),
    ("raw columns and Parquet encode", ["parquet::", "arrow_", "ais_store::raw", "ZSTD", "zstd"]),
    ("SQLite commit", ["sqlite3", "rusqlite", "ais_store::sqlite"]),
    ("roll-up: partials and sketches", ["ais_rollup::", "cardinality_estimator", "ais_stream::batch::roll_up"]),
    ("JSON decode and validation", ["ais_model::decode", "serde_json"]),
    ("WAL append and fsync", ["ais_log::wal"]),
    ("stream, other", ["ais_stream::"]),
    ("ingest, other", ["ais_ingest::"]),
    ("HTTP (hyper, axum)", ["hyper::", "axum::", "h2::", "tower::"]),
    ("async runtime", ["tokio::"]),
]


def stage_of(frames):
    for name, markers in STAGES:
        if any(marker in frame for frame in frames for marker in markers):
            return name
    if not frames or frames[0].startswith("ffff"):
        return "kernel, other"
    return "unattributed"


def samples(path):
    comm, frames = None, []
    with open(path, errors="replace") as stacks:
        for line in stacks:
            if not line.strip():
                continue
            if not line[0].isspace():
                if comm is not None:
                    yield comm, frames
                comm, frames = line.strip(), []
                continue
            parts = line.strip().split(None, 1)
            frames.append(parts[1] if len(parts) > 1 else parts[0])
    if comm is not None:
        yield comm, frames


def main():
    path, events, frequency = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    stages, threads = collections.Counter(), collections.Counter()
    for comm, frames in samples(path):
        stages[stage_of(frames)] += 1
        threads[comm] += 1
    total = sum(stages.values())
    if total == 0 or events == 0:
        sys.exit("profile: no samples or no events in the window")
    cpu_seconds = total / frequency
    print(f"{total} samples, {cpu_seconds:.1f} CPU-s, {cpu_seconds / events * 1e9:.0f} ns of CPU per event")
    print(f"{'stage':<34} {'share':>7} {'ns/event':>9}")
    for name, count in stages.most_common():
        print(f"{name:<34} {count / total * 100:6.1f}% {count / frequency / events * 1e9:9.0f}")
    print("threads: " + ", ".join(f"{comm} {count / total * 100:.0f}%" for comm, count in threads.most_common()))


main()
