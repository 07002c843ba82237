#!/usr/bin/env python3
"""Keeps a CI target directory that outlives its clones from filling the disk.

Cargo hashes a workspace crate's artifacts with the path of its source, so each clone
at a new path builds a new copy of every workspace crate and test binary beside the old
ones, and nothing ever removes the old ones. Dependencies from the registry keep their
hashes and stay reusable. So, before a build:

- when the workspace sits at another path than on the last run, every artifact of a
  workspace package is removed (those of this path would be rebuilt anyway);
- the incremental cache goes (CI builds with CARGO_INCREMENTAL=0);
- when the disk still has less than AIS_MIN_FREE_GIB (default 12) free, the whole
  target directory goes: a cold build is slower, a full disk fails the run.

Usage: prune_target.py TARGET_DIR WORKSPACE_DIR...
(the fuzz build names both the fuzz workspace and the main one its targets depend on)
"""

import json
import os
import re
import shutil
import subprocess
import sys


def workspace_names(workspace):
    meta = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--no-deps"],
            cwd=workspace,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    packages, targets = set(), set()
    for package in meta["packages"]:
        packages.add(package["name"])
        for target in package["targets"]:
            targets.add(target["name"].replace("-", "_"))
            targets.add(target["name"])
    return packages, targets


def remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


def profile_dirs(target):
    """debug/ and release/, and under a target triple (cargo fuzz builds there)."""
    for dirpath, dirnames, _ in os.walk(target):
        if ".fingerprint" in dirnames:
            yield dirpath
            dirnames.clear()
        elif dirpath.count(os.sep) - target.count(os.sep) >= 2:
            dirnames.clear()


def prune_workspace_units(target, packages, targets):
    unit = re.compile(r"^(?:lib)?(?P<name>.+)-[0-9a-f]{16}(?:\..*)?$")
    removed = 0
    for root in list(profile_dirs(target)):
        for sub, names in (
            ("deps", targets),
            ("examples", targets),
            (".fingerprint", packages),
            ("build", packages),
        ):
            directory = os.path.join(root, sub)
            if not os.path.isdir(directory):
                continue
            for entry in os.listdir(directory):
                match = unit.match(entry)
                if match and match.group("name") in names:
                    remove(os.path.join(directory, entry))
                    removed += 1
    return removed


def free_gib(path):
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize / 2**30


def main():
    target = sys.argv[1]
    workspaces = [os.path.realpath(w) for w in sys.argv[2:]]
    if not os.path.isdir(target):
        return
    stamp = os.path.join(target, "ais-last-workspace")
    here = " ".join(workspaces)
    last = open(stamp).read().strip() if os.path.exists(stamp) else None
    if last != here:
        packages, targets = set(), set()
        for workspace in workspaces:
            p, t = workspace_names(workspace)
            packages |= p
            targets |= t
        removed = prune_workspace_units(target, packages, targets)
        print(f"prune: workspace moved ({last} -> {here}): {removed} stale units removed")
    for root in list(profile_dirs(target)):
        remove(os.path.join(root, "incremental"))
    minimum = float(os.environ.get("AIS_MIN_FREE_GIB", "12"))
    if free_gib(target) < minimum:
        print(f"prune: under {minimum} GiB free: removing {target}")
        shutil.rmtree(target, ignore_errors=True)
        os.makedirs(target, exist_ok=True)
    with open(stamp, "w") as out:
        out.write(here + "\n")


if __name__ == "__main__":
    main()
