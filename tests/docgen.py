#!/usr/bin/python3
"""Generate the README's configuration and schema sections from the source of truth.

Configuration comes from each stage binary's --help "Environment:" section
(printed from the stage's config table); the schema from the COMMENT ON text
of a database migrated by `tds-writer migrate`. The README keeps each section
between <!-- BEGIN x --> and <!-- END x --> markers.

    tests/docgen.py --build-dir DIR [--dsn CONNINFO] [--write]

Without --write it exits 1 and prints the difference when the README is out
of date (tests/integration/test_readme.py runs it that way).
"""
import argparse
import difflib
import os
import re
import subprocess
import sys

STAGES = ("ingress", "fetcher", "processor", "writer")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def env_table(build_dir):
    out = []
    for stage in STAGES:
        binary = os.path.join(build_dir, stage, f"tds-{stage}")
        text = subprocess.run([binary, "--help"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, check=True).stdout
        lines = text.split("\n")
        try:
            start = next(i for i, l in enumerate(lines) if l.strip() == "Environment:")
        except StopIteration:
            raise SystemExit(f"tds-{stage} --help has no Environment: section")
        out.append(f"\n**tds-{stage}**\n\n| variable | default | meaning |\n| --- | --- | --- |")
        for line in lines[start + 1:]:
            if not line.strip():
                break
            m = re.match(r"\s+(TDS_[A-Z0-9_]+)\s+(.*)$", line)
            if not m:
                # continuation of the previous description
                out[-1] += " " + line.strip()
                continue
            name, desc = m.groups()
            default = ""
            # "(default X)" or "(default: 'X')"; an empty default is no default
            d = re.search(r"\s*\(default:? '?(.*?)'?\)\s*$", desc)
            if d:
                default = d.group(1)
                desc = desc[:d.start()]
            desc = desc.replace("|", "\\|")
            out.append(f"| `{name}` | {('`' + default + '`') if default else ''} | {desc} |")
    return "\n".join(out).lstrip("\n") + "\n"


def schema_table(dsn):
    sql = """
    SELECT n.nspname || '.' || c.relname, coalesce(obj_description(c.oid, 'pg_class'), ''),
           (SELECT string_agg(a.attname, ', ' ORDER BY a.attnum) FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname IN ('zoho', 'tds') AND c.relkind = 'r'
     ORDER BY n.nspname DESC, c.relname"""
    r = subprocess.run(["psql", dsn, "-AtF", "\t", "-c", sql], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, check=True)
    out = ["| table | what it holds | columns |", "| --- | --- | --- |"]
    for line in r.stdout.strip().split("\n"):
        name, comment, cols = line.split("\t")
        comment = comment.replace("|", "\\|").replace("\n", " ")
        out.append(f"| `{name}` | {comment} | {cols} |")
    return "\n".join(out) + "\n"


def replace_section(text, name, body):
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    if begin not in text or end not in text:
        raise SystemExit(f"README.md has no {begin} ... {end} section")
    a = text.index(begin) + len(begin)
    b = text.index(end)
    return text[:a] + "\n" + body + text[b:]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--dsn", help="a database migrated by tds-writer migrate (schema section)")
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args()
    path = os.path.join(ROOT, "README.md")
    old = open(path, encoding="utf-8").read()
    new = replace_section(old, "config", env_table(a.build_dir))
    if a.dsn:
        new = replace_section(new, "schema", schema_table(a.dsn))
    if new == old:
        return 0
    if a.write:
        open(path, "w", encoding="utf-8").write(new)
        return 0
    sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), new.splitlines(True),
                                               "README.md", "generated"))
    print("README.md is out of date: run tests/docgen.py --build-dir DIR --dsn ... --write")
    return 1


if __name__ == "__main__":
    sys.exit(main())
