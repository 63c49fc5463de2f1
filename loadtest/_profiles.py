"""The mix of client profiles (loadtest/profiles.toml or --profiles FILE) and the time
distributions in it. No locust import: the file can be checked on its own."""

from __future__ import annotations

import math
import random
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_FILE = Path(__file__).with_name("profiles.toml")
KINDS = {"imap": ("thunderbird", "apple_mail", "poller"), "pop3": ("leave_on_server",),
         "smtp": ("submission",)}


@dataclass(frozen=True)
class Dist:
    """A distribution of seconds: lognormal (median, sigma), uniform (low, high), fixed."""

    kind: str = "fixed"
    a: float = 0.0
    b: float = 0.0

    @classmethod
    def parse(cls, spec, where: str) -> Dist:
        if isinstance(spec, (int, float)):
            return cls("fixed", float(spec))
        if not isinstance(spec, dict):
            raise ValueError(f"{where}: a number or {{dist = ...}} table")  # noqa: TRY004
        kind = spec.get("dist", "fixed")
        try:
            if kind == "lognormal":
                d = cls(kind, float(spec["median"]), float(spec.get("sigma", 1.0)))
            elif kind == "uniform":
                d = cls(kind, float(spec["low"]), float(spec["high"]))
            elif kind == "fixed":
                d = cls(kind, float(spec["value"]))
            else:
                raise ValueError(f"{where}: unknown dist {kind!r}")
        except KeyError as exc:
            raise ValueError(f"{where}: {kind} needs {exc.args[0]}") from None
        if min(d.a, d.b) < 0 or (kind == "uniform" and d.b < d.a):
            raise ValueError(f"{where}: times must be positive (and low <= high)")
        return d

    def draw(self, rng: random.Random) -> float:
        if self.kind == "lognormal":
            return rng.lognormvariate(math.log(self.a), self.b) if self.a > 0 else 0.0
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b)
        return self.a


@dataclass(frozen=True)
class Profile:
    protocol: str
    name: str
    kind: str
    weight: float
    pause: Dist
    think: Dist
    hold: Dist
    options: dict = field(default_factory=dict, hash=False)

    @property
    def label(self) -> str:
        return f"{self.protocol} {self.name.replace('_', ' ')}"


def load(path: str | Path | None = None) -> dict[str, list[Profile]]:
    """protocol -> its profiles; a protocol the file leaves out gets none."""
    path = Path(path) if path else DEFAULT_FILE
    with open(path, "rb") as fh:
        data = tomllib.load(fh)
    out: dict[str, list[Profile]] = {}
    for protocol, profiles in data.items():
        if protocol not in KINDS or not isinstance(profiles, dict):
            raise ValueError(f"{path}: [{protocol}] is not one of {', '.join(KINDS)}")
        for name, spec in profiles.items():
            where = f"{path}: [{protocol}.{name}]"
            kind = spec.get("kind", name)
            if kind not in KINDS[protocol]:
                raise ValueError(f"{where}: kind {kind!r} is not one of "
                                 f"{', '.join(KINDS[protocol])}")
            weight = float(spec.get("weight", 1))
            if weight < 0:
                raise ValueError(f"{where}: negative weight")
            rest = {k: v for k, v in spec.items()
                    if k not in ("kind", "weight", "pause", "think", "hold")}
            out.setdefault(protocol, []).append(Profile(
                protocol, name, kind, weight, Dist.parse(spec.get("pause", 5), where),
                Dist.parse(spec.get("think", 0), where), Dist.parse(spec.get("hold", 0), where),
                rest))
    return out


class Dealer:
    """Hands out profiles to the users of one process in their weights' proportions, so a
    handful of users already covers the mix (each user is one client, for its lifetime)."""

    def __init__(self, profiles: list[Profile]) -> None:
        self.profiles = profiles
        self.dealt = [0] * len(profiles)

    def next(self) -> Profile:
        total = sum(p.weight for p in self.profiles) or 1.0
        n = sum(self.dealt) + 1
        i = max(range(len(self.profiles)),
                key=lambda j: (self.profiles[j].weight * n / total - self.dealt[j], -j))
        self.dealt[i] += 1
        return self.profiles[i]
