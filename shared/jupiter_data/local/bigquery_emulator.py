"""Runs ``bqemulator`` without network access. Dev only.

bqemulator runs ``INSTALL spatial`` at start, which downloads DuckDB's spatial extension and fails
offline. Installing the extension first from the ``duckdb-extension-spatial`` wheel (pinned to the same
DuckDB version in the Pipfile) makes that INSTALL a no-op.

    python -m jupiter_data.local.bigquery_emulator start --rest-port 9050 --grpc-port 9060
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    from bqemulator.cli import main as bqemulator_main
    from duckdb_extensions import import_extension

    import_extension("spatial")
    bqemulator_main(args=argv if argv is not None else sys.argv[1:], prog_name="bqemulator")


if __name__ == "__main__":
    main()
