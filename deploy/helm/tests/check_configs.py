#!/usr/bin/env python3
"""Loads every configuration file the chart renders (each ConfigMap's
vigil.yaml) with a built `vigil check-config`, the same loader and
validation as the services: an unknown key or a bad value fails it.

    check_configs.py MANIFEST VIGIL_BINARY

Secret files the configuration names (/etc/vigil/...) are made in a
temporary directory with stand-in keys, and the paths rewritten, since some
sections read their key files while validating.

Every file is checked whole, `cluster_agent` included (a known section
since commit c7bdc01). Only when the binary itself answers that
`cluster_agent` is an unknown key, i.e. it was built before that commit,
is the file checked again without that section, and the binary is named
as stale in a NOTE: rebuild it for the full check.
"""
import hashlib
import os
import subprocess
import sys
import tempfile

import yaml


def rewrite(v, root, made):
    if isinstance(v, dict):
        return {k: rewrite(x, root, made) for k, x in v.items()}
    if isinstance(v, list):
        return [rewrite(x, root, made) for x in v]
    if isinstance(v, str) and v.startswith(("/etc/vigil/", "/var/lib/vigil")):
        path = root + v
        if v.startswith("/etc/vigil/") and path not in made:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write("vgl_" + hashlib.sha256(v.encode()).hexdigest() + "\n")
            made.add(path)
        return path
    return v


def check(binary, path, cfg, root, env):
    """`vigil check-config` on `cfg` written to `path`: (result, output)."""
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    r = subprocess.run([binary, "check-config", "--config", path], capture_output=True, text=True, env=env)
    return r, (r.stdout + r.stderr).strip().replace(root, "")


def main():
    manifest, binary = sys.argv[1], sys.argv[2]
    with open(manifest) as f:
        docs = [d for d in yaml.safe_load_all(f) if isinstance(d, dict)]
    failed = checked = 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    for d in docs:
        if d.get("kind") != "ConfigMap" or "vigil.yaml" not in (d.get("data") or {}):
            continue
        name = d["metadata"]["name"]
        cfg = yaml.safe_load(d["data"]["vigil.yaml"]) or {}
        with tempfile.TemporaryDirectory() as root:
            cfg = rewrite(cfg, root, set())
            path = os.path.join(root, "vigil.yaml")
            stale = False
            r, out = check(binary, path, cfg, root, env)
            if (r.returncode != 0 and "cluster_agent" in cfg
                    and "unknown configuration key `cluster_agent`" in out):
                # A binary built before c7bdc01: the rest of the file can
                # still be checked.
                stale = True
                r, out = check(binary, path, {k: v for k, v in cfg.items() if k != "cluster_agent"}, root, env)
                print(f"NOTE {name}: STALE binary {binary}: it refuses the section [cluster_agent] "
                      "(built before commit c7bdc01, which made it known); checked without it; "
                      "rebuild vigil for the full check")
        checked += 1
        if r.returncode != 0:
            failed += 1
            print(f"FAIL ConfigMap/{name}: {out}")
        else:
            print(f"ok   ConfigMap/{name}{' (without [cluster_agent])' if stale else ''}: {out}")
    print(f"check-config: {checked} files, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
