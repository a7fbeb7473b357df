"""Re-rolls: an instance generated again with a new seed because a reviewer asked.

Pure. The seed of the k-th re-roll is derived from the instance's seed basis (its
matrix values, not its job's name: ``identity.seed_basis``) and k (and a fixed seed, which it
replaces: a re-roll must give a new image), so every re-roll
has its own fingerprint, and the lockfile's count (``LockEntry.reroll``)
reproduces the request that made the current images.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from pipeline.core.apimart.rules import REQUEST_FIELDS
from pipeline.core.expansion.identity import derive_seed, seed_basis
from pipeline.core.expansion.instances import Instance

SeedOrigin = Literal["derived", "random", "fixed"]


def seed_origin(inst: Instance) -> SeedOrigin:
    """Where an instance's seed came from: derived by imgspec, ``seed: random``, or fixed."""
    if inst.seed is None:
        return "random"
    return "derived" if inst.derived_seed else "fixed"


def rerolled(inst: Instance, count: int) -> Instance:
    """The instance as its ``count``-th re-roll makes it: the same request with a new seed.

    Count 0 is the instance itself.
    """
    if count <= 0:
        return inst
    origin = seed_origin(inst)
    basis = seed_basis(inst.key)
    if origin != "derived":
        basis = f"{basis}#seed={inst.seed}"
    seed = derive_seed(f"{basis}#reroll={count}")
    body = {**inst.request, "seed": seed}
    ordered = {name: body[name] for name in REQUEST_FIELDS if name in body}
    return replace(inst, seed=seed, request=ordered | body)


def reroll_note(inst: Instance) -> str:
    """What a re-roll of ``inst`` regenerates and which seed it sends, for the plan's reader."""
    origin = seed_origin(inst)
    images = f"all {inst.n} images" if inst.n > 1 else "its image"
    if origin == "fixed":
        return f"{images}, new seed replacing the manifest's seed {inst.seed}"
    if origin == "random":
        return f"{images}, new seed (the manifest's seed: random sends none)"
    return f"{images}, new derived seed"
