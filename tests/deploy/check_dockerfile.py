#!/usr/bin/python3
"""check_dockerfile — the checks hadolint would make that matter to us.

Parses deploy/Dockerfile (line continuations, ARG defaults, multi-stage
FROM ... AS name) and checks: every base image is pinned (a version tag with a
minor or patch part, or a digest; never :latest or no tag); no ADD from a URL
or a git repository; every stage that runs something (ENTRYPOINT or CMD, or
the last stage) runs as a non-root USER; no secret-looking ENV or ARG with a
value; each runtime target has a HEALTHCHECK (or says HEALTHCHECK NONE) and
OCI labels; the build stage is not the final image (build tools stay out);
every target that compose or the manifests build exists.

Usage: check_dockerfile.py [PATH]
"""

import os
import re
import shlex
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploylib as dl  # noqa: E402

DOCKERFILE = os.path.join(dl.DEPLOY, "Dockerfile")
SECRET_WORDS = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|CREDENTIAL)", re.I)


def instructions(text):
    """[(lineno, INSTRUCTION, args)] with continuations joined and comments dropped."""
    out = []
    buf, start = "", None
    for i, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if buf and s.startswith("#"):
            continue  # comment lines inside a continued instruction
        if start is None:
            start = i
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        word, _, rest = buf.strip().partition(" ")
        out.append((start, word.upper(), rest.strip()))
        buf, start = "", None
    if buf:
        word, _, rest = buf.strip().partition(" ")
        out.append((start, word.upper(), rest.strip()))
    return out


def expand(s, args):
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args.get(m.group(1), m.group(0)), s)


def pinned(image):
    if "@sha256:" in image:
        return True
    name = image.rsplit("/", 1)[-1]
    if ":" not in name:
        return False
    tag = name.split(":", 1)[1]
    if tag == "latest":
        return False
    # A moving major-only tag ("12", "bookworm", "12-slim") is not a pin.
    return re.match(r"^v?\d+\.\d+", tag) is not None


class Stage:
    def __init__(self, name, base, line):
        self.name = name
        self.base = base
        self.line = line
        self.user = None
        self.runs = False
        self.healthcheck = None
        self.labels = False


def check(rep, path):
    text = open(path).read()
    ins = instructions(text)
    global_args = {}
    stages = []
    for line, word, rest in ins:
        where = f"{os.path.basename(path)}:{line}"
        if word == "ARG":
            k, _, v = rest.partition("=")
            if not stages:
                global_args[k.strip()] = v.strip().strip('"')
            if v and SECRET_WORDS.search(k):
                rep.fail(where, f"ARG {k} has a default value; secrets must not be baked in")
            continue
        if word == "FROM":
            parts = [p for p in rest.split() if not p.startswith("--")]
            base = expand(parts[0], global_args)
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            st = Stage(name, base, line)
            prev = {s.name: s for s in stages if s.name}
            if base in prev:
                parent = prev[base]
                st.user, st.healthcheck, st.labels = parent.user, parent.healthcheck, parent.labels
                st.runs = parent.runs
            else:
                rep.check(pinned(base), where, f"base image {base!r} is not pinned to a version or digest")
            stages.append(st)
            continue
        if not stages:
            rep.fail(where, f"{word} before the first FROM")
            continue
        st = stages[-1]
        if word == "USER":
            st.user = rest.split(":")[0].strip()
        elif word in ("ENTRYPOINT", "CMD"):
            st.runs = True
        elif word == "HEALTHCHECK":
            st.healthcheck = rest
        elif word == "LABEL":
            st.labels = True
        elif word == "ADD":
            try:
                toks = [t for t in shlex.split(rest) if not t.startswith("--")]
            except ValueError:
                toks = rest.split()
            for src in toks[:-1]:
                rep.check(not re.match(r"^(https?|ftp|git)://|^git@", src), where,
                          f"ADD from a URL ({src}); download in a RUN step with a checksum instead")
        elif word == "ENV":
            for m in re.finditer(r"([A-Za-z_][A-Za-z0-9_]*)=(\"[^\"]*\"|\S+)", rest):
                if SECRET_WORDS.search(m.group(1)) and m.group(2) not in ('""', ""):
                    rep.fail(where, f"ENV {m.group(1)} bakes a secret-looking value into the image")
        elif word == "COPY":
            rep.check(not re.search(r"(^|\s)(\.env|secrets?/)", rest), where,
                      f"COPY of what looks like secrets: {rest}")

    if not rep.check(stages, os.path.basename(path), "no FROM"):
        return stages
    final_names = {s.name for s in stages}
    for st in stages:
        where = f"{os.path.basename(path)}:{st.line} ({st.name or 'unnamed'})"
        is_last = st is stages[-1]
        if st.runs or is_last:
            rep.check(st.user not in (None, "", "0", "root"), where,
                      f"runs as root (USER {st.user or 'not set'})")
            rep.check(st.healthcheck is not None, where, "no HEALTHCHECK (or HEALTHCHECK NONE)")
            rep.check(st.labels, where, "no LABEL (org.opencontainers.image.*)")
    rep.check(not re.search(r"\bmeson\b|\bgcc\b|build-essential", " ".join(
        r for _, w, r in ins[[i for i, (_, w, _) in enumerate(ins) if w == "FROM"][-1]:]
        if w == "RUN")), os.path.basename(path), "the final stage installs build tools")
    # Targets that the compose file and the manifests use must exist.
    for st in dl.STAGES + ("zohosim",):
        rep.check(st in final_names, os.path.basename(path), f"no build target {st!r}")
    return stages


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    path = argv[0] if argv else DOCKERFILE
    rep = dl.Report("check_dockerfile")
    stages = check(rep, path)
    rep.note(f"{len(stages)} stages: {', '.join(s.name or '?' for s in stages)}")
    return rep.finish()


if __name__ == "__main__":
    sys.exit(main())
