"""Each run's speed offset, so that runs measured at different times pool on one scale.

A machine's state moves between runs: on the Zen 4 pack's four full runs the same configs ran from 10 % faster
to 9 % slower than their mean, run by run. A config that every run measured averages that out; one that only
some runs measured (a later run at another seed, a draw added since) keeps their state. Where runs share
configs (a run at another seed also measures part of seed 0's plan: `runner.ANCHOR_SCALE`), the offsets are
estimated from them as a least-squares two-way fit, log2 time = config + run, per kind where a run's offset for it
is precise enough and over all kinds otherwise. Runs that share nothing keep offset 0.
"""
from __future__ import annotations

import numpy as np

MIN_SHARED = 20  # configs' worth of precision before a run gets an offset (of its own for a kind)
ALL_KINDS = ""   # the key of a run's offset over all kinds


def run_offsets(measured: list[dict[str, float]], kind_of: dict[str, str]) -> list[dict[str, float]]:
    """Per run, kind -> offset in log2 (`ALL_KINDS` for the run's offset over every kind), from each run's
    measured log2 times by sample identity (`kind_of` names each identity's kind). A run gets an offset only where
    it is as precise as one from `MIN_SHARED` shared configs (0 over all kinds, and its offset over all kinds for a
    kind, otherwise). Over all kinds, the offsets of each group of connected runs average 0 (weighted by the configs
    each shares), so pooling keeps their mean machine state; a kind's average what the same runs' offsets over all
    kinds average, so that a run falling back to the latter stays on the same scale."""
    shared = _shared(measured)
    overall = _centred(*_fit(measured, shared), [0.0] * len(measured))
    offsets = [{ALL_KINDS: 0.0 if value is None else value} for value in overall]
    reference = [offset[ALL_KINDS] for offset in offsets]
    for kind in sorted({kind_of[key] for key in shared}):
        values = _centred(*_fit(measured, {key for key in shared if kind_of[key] == kind}), reference)
        for run, value in enumerate(values):
            if value is not None:
                offsets[run][kind] = value
    return offsets


def _centred(values: np.ndarray, links: np.ndarray, counts: np.ndarray, groups: list[list[int]],
             reference: list[float]) -> list[float | None]:
    """Per group, the offsets of the runs precise enough (`MIN_SHARED`) shifted so that their mean, weighted by the
    configs each shares, is the reference offsets' mean over them; None for the other runs."""
    centred: list[float | None] = [None] * len(values)
    for group in groups:
        precise = [run for run in group if links[run] >= MIN_SHARED]
        if not precise:
            continue
        shares = counts[precise] / counts[precise].sum()
        shift = float(shares @ np.array([reference[run] for run in precise])) - float(shares @ values[precise])
        for run in precise:
            centred[run] = float(values[run]) + shift
    return centred


def offset_for(offsets: dict[str, float], kind: str) -> float:
    """A run's offset for a kind: its own, else the run's over all kinds."""
    return offsets.get(kind, offsets[ALL_KINDS])


def _shared(measured: list[dict[str, float]]) -> set[str]:
    counts: dict[str, int] = {}
    for data in measured:
        for key in data:
            counts[key] = counts.get(key, 0) + 1
    return {key for key, count in counts.items() if count > 1}


Fitted = tuple[np.ndarray, np.ndarray, np.ndarray, list[list[int]]]


def _fit(measured: list[dict[str, float]], keys: set[str]) -> Fitted:
    """Least-squares run offsets of the two-way fit over the given shared identities, summing to 0 per connected
    group of runs; each run's precision as a number of configs (one measurement's variance over its offset's: about
    the configs that link it to the others); the identities each run measured; the groups."""
    runs = len(measured)
    laplacian, pulls = np.zeros((runs, runs)), np.zeros(runs)
    for key in keys:
        holders = [run for run, data in enumerate(measured) if key in data]
        values = np.array([measured[run][key] for run in holders])
        pulls[holders] += values - values.mean()
        laplacian[np.ix_(holders, holders)] -= 1.0 / len(holders)
        laplacian[holders, holders] += 1.0
    offsets, links = np.zeros(runs), np.zeros(runs)
    groups = _connected(laplacian)
    for group in groups:
        if len(group) < 2:
            continue
        # the group's Laplacian plus the mean (1/k 11'): invertible; its solution sums to zero, and its inverse less
        # 1/k is the covariance of sum-zero offsets in units of one measurement's variance
        inverse = np.linalg.inv(laplacian[np.ix_(group, group)] + 1.0 / len(group))
        offsets[group] = inverse @ pulls[group]
        variances = np.diag(inverse) - 1.0 / len(group)
        links[group] = np.where(variances > 0, 1.0 / np.maximum(variances, 1e-300), 0.0)
    counts = np.array([sum(key in data for key in keys) for data in measured], dtype=float)
    return offsets, links, counts, groups


def _connected(laplacian: np.ndarray) -> list[list[int]]:
    """Groups of runs linked by shared identities (a run that shares none is a group of its own)."""
    unseen, groups = set(range(len(laplacian))), []
    while unseen:
        group, frontier = [], [min(unseen)]
        unseen.discard(frontier[0])
        while frontier:
            run = frontier.pop()
            group.append(run)
            linked = {int(other) for other in np.flatnonzero(laplacian[run]) if int(other) in unseen}
            unseen -= linked
            frontier.extend(linked)
        groups.append(sorted(group))
    return groups
