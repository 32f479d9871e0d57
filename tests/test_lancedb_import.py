"""kbterm imports LanceDB without the REST client it never uses (kbterm/lancedb_import.py);
the package stays whole for anything that asks for it."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO

CHECK = r"""
import sys, time
from kbterm.lancedb_import import REST_CLIENT, import_lancedb

lancedb = import_lancedb()
eager = sorted(m for m in sys.modules if m.startswith(REST_CLIENT + ".api"))
print("EAGER", eager)
import pyarrow as pa
from lancedb.index import FTS

db = lancedb.connect(sys.argv[1])
table = db.create_table("t", pa.table({"id": ["a", "b"], "text": ["kelp forests", "tide"]}))
table.create_index("text", config=FTS())
print("HITS", [r["id"] for r in table.search("kelp", query_type="fts").limit(5).to_list()])
import lance_namespace_urllib3_client as client
print("API", client.DataApi.__module__, client.__version__)
"""


def test_lancedb_works_without_its_rest_client_and_the_client_loads_when_asked(tmp_path):
    proc = subprocess.run([sys.executable, "-c", CHECK, str(tmp_path / "db")], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert lines["EAGER"] == "[]"  # the API classes were not imported with LanceDB
    assert lines["HITS"] == "['a']"
    module, version = lines["API"].split()
    assert module == "lance_namespace_urllib3_client.api.data_api" and version[0].isdigit()
