"""Reads the raw-event Parquet files of an `ais serve` data directory with pyarrow,
an implementation independent of the one that wrote them, and prints their schema
and rows as JSON on stdout: {"schema": [[name, type], ...], "rows": [...]}.

Usage: read_events.py EVENTS_DIR
"""

import json
import sys

import pyarrow.dataset as ds


def plain(value):
    """JSON-friendly form of one pyarrow Python value."""
    if hasattr(value, "timestamp"):  # datetime: unix ms
        return round(value.timestamp() * 1000)
    if type(value).__name__ == "Decimal":
        return str(value)
    if isinstance(value, list):  # a map reads as a list of (key, value) pairs
        return [[plain(k), plain(v)] for k, v in value]
    return value


def main():
    dataset = ds.dataset(sys.argv[1], format="parquet", partitioning="hive")
    table = dataset.to_table()
    rows = [
        {name: plain(value) for name, value in row.items()} for row in table.to_pylist()
    ]
    schema = [[field.name, str(field.type)] for field in table.schema]
    json.dump({"schema": schema, "rows": rows}, sys.stdout)


if __name__ == "__main__":
    main()
