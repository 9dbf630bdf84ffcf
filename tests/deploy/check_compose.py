#!/usr/bin/python3
"""check_compose — validate deploy/compose with `docker-compose config` and check it.

Runs Debian's docker-compose (1.29) `config` on docker-compose.yml with the
commented .env.example as its .env, once plain and once with the demo
profile, parses the result and checks: PostgreSQL with a volume and a health
check; the four stages with restart policies, health-conditioned depends_on,
read-only root, dropped capabilities; ingress publishing the webhook port with
its journal on a named volume; the processor scalable (no fixed host port or
container name); the simulator only in the demo profile, Prometheus only in
the monitoring profile with its configuration mounted; each connect
endpoint naming the service of the stage it must reach on the port that stage
binds; secrets given as file: references to mounted compose secrets; and —
when the stage binaries are built (TDS_BUILD_DIR) — every variable a
container sets is one its stage knows, every required one is set, and the
stage accepts the values. Never needs a Docker engine.

Usage: check_compose.py [--no-env] [--compose-dir DIR]
"""

import argparse
import os
import re
import subprocess
import sys

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploylib as dl  # noqa: E402

COMPOSE_DIR = os.path.join(dl.DEPLOY, "compose")


def compose_config(cdir, profiles=()):
    cmd = ["docker-compose", "--project-directory", cdir, "--env-file",
           os.path.join(cdir, ".env.example"), "-f", os.path.join(cdir, "docker-compose.yml")]
    for p in profiles:
        cmd += ["--profile", p]
    cmd.append("config")
    # docker-compose also reads COMPOSE_* and the variables it interpolates from
    # the environment: give it a clean one so the result depends on the files only.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root")}
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=120, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"docker-compose config failed: {r.stderr.strip()}")
    return yaml.safe_load(r.stdout)


def env_of(svc):
    env = svc.get("environment") or {}
    if isinstance(env, list):
        out = {}
        for item in env:
            k, _, v = item.partition("=")
            out[k] = v if _ else None
        return out
    return {k: ("" if v is None else str(v)) for k, v in env.items()}


def volumes_of(svc):
    """Long or short volume syntax → list of dicts with type, source, target."""
    out = []
    for v in svc.get("volumes") or []:
        if isinstance(v, dict):
            out.append(v)
            continue
        parts = str(v).split(":")
        if len(parts) == 1:
            out.append({"type": "volume", "source": None, "target": parts[0]})
            continue
        src, tgt = parts[0], parts[1]
        kind = "bind" if src.startswith(("/", ".", "~")) else "volume"
        out.append({"type": kind, "source": src, "target": tgt,
                    "read_only": len(parts) > 2 and "ro" in parts[2].split(",")})
    return out


def ports_of(svc):
    """Long or short port syntax → list of dicts with target and published."""
    out = []
    for p in svc.get("ports") or []:
        if isinstance(p, dict):
            out.append({"target": int(p.get("target", 0)), "published": p.get("published")})
            continue
        spec = str(p).split("/")[0]
        parts = spec.split(":")
        out.append({"target": int(parts[-1]), "published": parts[-2] if len(parts) > 1 else None})
    return out


def stage_of(svc):
    target = (svc.get("build") or {}).get("target") if isinstance(svc.get("build"), dict) else None
    st = dl.stage_of_image(svc.get("image", ""))
    return st, target


def secret_targets(svc, top_secrets):
    """path inside the container → compose secret name, for file: checks."""
    out = {}
    for s in svc.get("secrets") or []:
        if isinstance(s, str):
            out[f"/run/secrets/{s}"] = s
        else:
            tgt = s.get("target") or s["source"]
            if not tgt.startswith("/"):
                tgt = f"/run/secrets/{tgt}"
            out[tgt] = s["source"]
    return out


def check(rep, cfg, cfg_demo, with_env):
    services = cfg.get("services") or {}
    demo_services = cfg_demo.get("services") or {}
    where = "compose"
    if rep.check("zohosim" in demo_services, where, "no simulator service in the demo profile"):
        rep.check("demo" in (demo_services["zohosim"].get("profiles") or []), "compose:zohosim",
                  "the simulator is not limited to the demo profile")
    optional = {"zohosim": "demo", "prometheus": "monitoring"}
    for name, svc in services.items():
        if name not in optional:
            rep.check(not svc.get("profiles"), f"compose:{name}",
                      "is behind a profile, so a plain `docker-compose up` does not start it")
        elif name == "prometheus":
            rep.check(optional[name] in (svc.get("profiles") or []), f"compose:{name}",
                      f"not limited to the {optional[name]} profile")
            cmd = svc.get("command") or []
            cfgs = [a.split("=", 1)[1] for a in cmd if str(a).startswith("--config.file=")]
            found = False
            for v in volumes_of(svc):
                for c in cfgs:
                    tgt = v.get("target", "").rstrip("/") + "/"
                    if v.get("type") == "bind" and c.startswith(tgt):
                        found = os.path.isfile(os.path.join(v["source"], c[len(tgt):]))
            rep.check(found, f"compose:{name}",
                      f"--config.file {cfgs} is not a file mounted from this repository")

    # PostgreSQL
    pg = services.get("postgres")
    if rep.check(pg, where, "no postgres service"):
        rep.check(any(v.get("target") == "/var/lib/postgresql/data" and v.get("type") == "volume"
                      for v in volumes_of(pg)), "compose:postgres", "data directory is not on a named volume")
        rep.check(pg.get("healthcheck"), "compose:postgres", "no healthcheck")
        img = pg.get("image", "")
        rep.check(":" in img and not img.endswith(":latest"), "compose:postgres",
                  f"image {img!r} is not pinned to a version tag")

    stages = {}
    for name, svc in services.items():
        st, target = stage_of(svc)
        if st is None:
            continue
        w = f"compose:{name}"
        rep.check(target in (None, st), w, f"image is tds-{st} but build target is {target}")
        if svc.get("command") in (["migrate"], "migrate"):
            rep.check(st == "writer", w, "migrate runs on an image other than the writer's")
            rep.check(str(svc.get("restart", "no")) in ("no", "on-failure"), w,
                      "a one-shot migrate service must not restart forever")
        else:
            rep.check(st not in stages, w, f"a second service runs tds-{st}")
            stages[st] = (name, svc)
            rep.check(svc.get("restart") in ("unless-stopped", "always", "on-failure"), w,
                      f"restart policy {svc.get('restart')!r}")
            hc = svc.get("healthcheck") or {}
            rep.check(not hc.get("disable"), w, "healthcheck disabled (the image's HEALTHCHECK is needed "
                                                "for depends_on: service_healthy)")
        rep.check(svc.get("read_only") is True, w, "root filesystem is not read_only")
        rep.check("ALL" in (svc.get("cap_drop") or []), w, "capabilities not dropped (cap_drop: [ALL])")
        rep.check("no-new-privileges:true" in (svc.get("security_opt") or []), w,
                  "no security_opt no-new-privileges:true")
        rep.check(str(svc.get("user", "")) not in ("0", "root") and not str(svc.get("user", "")).startswith("0:"),
                  w, "runs as root")
        rep.check(not svc.get("env_file"), w, "env_file passes a whole file into the container; "
                                              "list the stage's variables under environment:")
        grace = svc.get("stop_grace_period", "10s")
        secs = float(str(grace).rstrip("s")) if str(grace).rstrip("s").replace(".", "").isdigit() else None
        rep.check(secs is not None and secs > dl.DRAIN_S, w,
                  f"stop_grace_period {grace} is not above the {dl.DRAIN_S} s drain time")
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            rep.fail(w, "depends_on without health conditions")
        else:
            for dep, cond in deps.items():
                rep.check((cond or {}).get("condition") in ("service_healthy",
                                                            "service_completed_successfully"),
                          w, f"depends_on {dep} without a health condition")
    for st in dl.STAGES:
        rep.check(st in stages, where, f"no service runs tds-{st}")

    # Who reaches whom.
    svc_stage = {name: st for st, (name, _) in stages.items()}
    for st, (name, svc) in stages.items():
        env = env_of(svc)
        w = f"compose:{name}"
        for setting, dst in dl.CONNECTS[st].items():
            val = env.get(setting)
            if not rep.check(val, w, f"{setting} is not set (the default points at 127.0.0.1)"):
                continue
            for ep in val.split(","):
                hp = dl.parse_endpoint(ep)
                if not rep.check(hp, w, f"{setting}={val}: not tcp://host:port"):
                    continue
                host, port = hp
                if rep.check(svc_stage.get(host) == dst, w,
                             f"{setting} points at {host!r}, which is not the {dst} service"):
                    dname, dsvc = stages[dst]
                    bport = dl.bind_port(env_of(dsvc), dl.BIND_FOR[setting])
                    rep.check(bport == port, w, f"{setting} uses port {port} but {dname} binds "
                                                f"{dl.BIND_FOR[setting]} on {bport}")

    if "ingress" in stages:
        name, svc = stages["ingress"]
        env = env_of(svc)
        w = f"compose:{name}"
        wport = dl.hostport_port(env.get("TDS_INGRESS_LISTEN")) or 8080
        rep.check(any(p["target"] == wport and p["published"] for p in ports_of(svc)), w,
                  f"webhook port {wport} is not published")
        jdir = env.get("TDS_INGRESS_JOURNAL_DIR", "/var/lib/tds/journal")
        rep.check(any(v.get("type") == "volume" and v.get("target", "").rstrip("/") == jdir.rstrip("/")
                      for v in volumes_of(svc)), w, f"journal {jdir} is not on a named volume")
    if "processor" in stages:
        name, svc = stages["processor"]
        w = f"compose:{name}"
        rep.check(not svc.get("container_name"), w, "container_name prevents --scale")
        rep.check(not any(p["published"] for p in ports_of(svc)), w, "a fixed host port prevents --scale")

    # The organizations file: every stage that reads it gets it, the same file.
    orgs_src = {}
    for st in dl.ORGS_STAGES:
        if st not in stages:
            continue
        name, svc = stages[st]
        cfgpath = env_of(svc).get("TDS_CONFIG")
        if not rep.check(cfgpath, f"compose:{name}", "TDS_CONFIG is not set" + (
                ": the alert rule entity_stale then assumes TDS_ALERT_SYNC_INTERVAL_S for every "
                "organization instead of its incremental_every_s" if st == "writer" else "")):
            continue
        binds = [v for v in volumes_of(svc) if v.get("target") == cfgpath]
        if binds:
            orgs_src[st] = binds[0].get("source")
            rep.check(binds[0].get("read_only"), f"compose:{name}",
                      f"the organizations file {cfgpath} is not mounted read-only")
    if "fetcher" in orgs_src:
        for st, src in orgs_src.items():
            rep.check(src == orgs_src["fetcher"], f"compose:{stages[st][0]}",
                      f"TDS_CONFIG is {src}, the fetcher's is {orgs_src['fetcher']}: the stages "
                      "must read the same organizations")

    # Secrets and the environment against the stages' tables.
    top = cfg.get("secrets") or {}
    for name, svc in services.items():
        st, _ = stage_of(svc)
        if st is None:
            continue
        w = f"compose:{name}"
        targets = secret_targets(svc, top)

        def resolve(path, targets=targets):
            if path not in targets:
                return f"{path} is not a secret mounted into this service"
            if targets[path] not in top:
                return f"secret {targets[path]} is not defined at the top level"
            return None
        env = env_of(svc)
        cfgpath = env.get("TDS_CONFIG")
        if cfgpath:
            binds = [v for v in volumes_of(svc) if v.get("target") == cfgpath]
            if rep.check(binds, w, f"TDS_CONFIG {cfgpath} is not mounted"):
                src = binds[0].get("source")
                if rep.check(src and os.path.isfile(src), w, f"organizations file {src} does not exist") \
                        and st in dl.ORGS_CREDENTIAL_STAGES:
                    import json
                    try:
                        orgs = json.load(open(src))["organizations"]
                    except (ValueError, KeyError, TypeError) as e:
                        rep.fail(w, f"{src} is not a valid organizations file: {e}")
                        orgs = []
                    for o in orgs:
                        refs = [o.get(f) for f in dl.ORGS_CREDENTIALS[st]]
                        hooks = [v for f in dl.WEBHOOK_FIELDS for v in (o.get(f) or [])]
                        if st in dl.WEBHOOK_CREDENTIAL_STAGES:
                            refs += hooks
                        else:
                            for v in hooks:
                                if isinstance(v, str) and v.startswith("file:"):
                                    rep.check(resolve(v[5:]) is not None, w,
                                              f"org {o.get('org_id')}: a webhook credential's "
                                              "secret is mounted, but this stage never reads "
                                              "it: leave it out of the service")
                        for v in refs:
                            if v is None:
                                continue
                            if rep.check(isinstance(v, str) and v.startswith("file:"), w,
                                         f"{os.path.basename(src)}: org {o.get('org_id')} has an inline "
                                         "credential; use file:/run/secrets/..."):
                                err = resolve(v[5:])
                                rep.check(err is None, w, f"{os.path.basename(src)}: {err}")
        if with_env:
            dl.check_stage_env(rep, w, st, env, resolve)

    # Every organizations file shipped beside the compose file (the example
    # and the demo one) names only secrets that compose defines.
    import glob
    import json
    cdir = os.path.dirname(os.path.abspath(cfg.get("_file", ""))) if cfg.get("_file") else None
    for path in sorted(glob.glob(os.path.join(cdir or COMPOSE_DIR, "orgs*.json"))):
        w = f"compose:{os.path.basename(path)}"
        try:
            orgs = json.load(open(path))["organizations"]
        except (ValueError, KeyError, TypeError) as e:
            rep.fail(w, f"not a valid organizations file: {e}")
            continue
        rep.check(orgs, w, "no organizations")
        for o in orgs:
            refs = [o.get(f) for f in ("client_id", "client_secret", "refresh_token")]
            refs += [v for f in dl.WEBHOOK_FIELDS for v in (o.get(f) or [])]
            for v in refs:
                if v is None:
                    continue
                m = re.match(r"^file:/run/secrets/([A-Za-z0-9_.-]+)$", v) if isinstance(v, str) else None
                if rep.check(m, w, f"org {o.get('org_id')}: credential {v!r} is not file:/run/secrets/NAME"):
                    rep.check(m.group(1) in top, w, f"org {o.get('org_id')}: secret {m.group(1)} is not "
                                                    "defined in docker-compose.yml")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--no-env", action="store_true", help="skip the config-table check")
    ap.add_argument("--compose-dir", default=COMPOSE_DIR)
    args = ap.parse_args(argv)
    rep = dl.Report("check_compose")
    if not dl.which("docker-compose"):
        print("check_compose: docker-compose not found (Debian package docker-compose)")
        return 2
    with_env = not args.no_env
    if with_env:
        missing = [s for s in dl.STAGES if dl.stage_binary(s) is None]
        if missing:
            print(f"check_compose: stage binaries missing under TDS_BUILD_DIR={dl.build_dir()!r}: "
                  f"{', '.join('tds-' + m for m in missing)} (use --no-env to skip that check)")
            return 2
    try:
        cfg = compose_config(args.compose_dir)
        cfg_demo = compose_config(args.compose_dir, ["demo"])
    except RuntimeError as e:
        rep.fail("compose", str(e))
        return rep.finish()
    cfg["_file"] = os.path.join(args.compose_dir, "docker-compose.yml")
    check(rep, cfg, cfg_demo, with_env)
    rep.note(f"{len(cfg.get('services') or {})} services, "
             f"{len(cfg_demo.get('services') or {})} with --profile demo"
             + ("" if with_env else " (config-table check skipped)"))
    return rep.finish()


if __name__ == "__main__":
    sys.exit(main())
