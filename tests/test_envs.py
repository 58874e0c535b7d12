"""The conda files in envs/ pin the same versions as requirements.lock."""

import re

import yaml


def _lock(root):
    pins = {}
    for line in (root / "requirements.lock").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower()] = version
    return pins


def test_conda_envs_match_lock(root):
    lock = _lock(root)
    assert lock["torch"] == "2.13.0"
    assert lock["snakemake"].startswith("9.")
    envs = sorted((root / "envs").glob("*.yaml"))
    assert envs
    for env in envs:
        deps = yaml.safe_load(env.read_text())["dependencies"]
        pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
        assert pip, env
        for spec in pip:
            name, version = re.split(r"==", spec)
            assert lock.get(name.lower()) == version, f"{env.name}: {spec} but lock has {lock.get(name.lower())}"
