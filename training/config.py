"""Training configs (TOML) -> plain dicts with checked keys."""
from __future__ import annotations

import copy
import tomllib
from pathlib import Path

REQUIRED = {"name", "version", "arch", "input_size", "in_channels", "preprocessing", "data", "train", "augment"}


def load(path: str | Path, overrides: dict | None = None) -> dict:
    with open(path, "rb") as f:
        cfg = tomllib.load(f)
    missing = REQUIRED - cfg.keys()
    if missing:
        raise ValueError(f"{path}: missing keys {sorted(missing)}")
    cfg = copy.deepcopy(cfg)
    for dotted, value in (overrides or {}).items():
        node = cfg
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node[p]
        if leaf not in node:
            raise ValueError(f"override {dotted!r} names no config key")
        node[leaf] = type(node[leaf])(value) if not isinstance(node[leaf], bool) else value in (True, "true", "1")
    pre = cfg["preprocessing"]
    if pre["kind"] not in ("hu_window", "raw_stored"):
        raise ValueError(f"{path}: preprocessing.kind must be hu_window or raw_stored")
    if pre["kind"] == "hu_window" and pre["width"] <= 0:
        raise ValueError(f"{path}: window width must be positive")
    return cfg


def parse_overrides(items: list[str]) -> dict:
    out = {}
    for it in items:
        k, _, v = it.partition("=")
        out[k] = v
    return out
