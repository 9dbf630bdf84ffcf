"""The README's configuration and schema sections match the binaries' config
tables and the migrated schema's comments (tests/docgen.py writes them)."""
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_readme_config_and_schema_are_current(db, procs, bins):
    procs.run("tds-writer", ["migrate"], env={"TDS_DATABASE_URL": db.url})
    r = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "tests", "docgen.py"),
                        "--build-dir", bins.build_dir, "--dsn", db.dsn],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert r.returncode == 0, r.stdout[-6000:]
