"""Gap rules of Section 5: which training noise levels to skip, fixed from ``W`` and ``C`` alone.

Gap training (Sec. 5) removes an interval of noise levels from EDM's training distribution
``ln sigma ~ N(P_mean, P_std^2)`` (:func:`paperlib.edm.sample_training_sigmas` with ``gap=``). The
paper places the gap on the danger zone of Sec. 4.2 (App. E.4: where the max posterior weight
``W(sigma)`` and the coverage ``C(sigma)`` are both high), expressed in DDPM timesteps, and sweeps
gaps that start at the zone's low-noise edge ("[100-200], [100-275], [100-350]", Fig. 5 / Fig. 9).

Every rule here reads only a :class:`paperlib.regimes.DangerZone` (the two curves of a training set),
so a gap is fixed before any model is trained:

- :func:`zone_gap`: the danger zone itself (``W >= level`` and ``C >= level``);
- :func:`sweep_gaps`: the first fractions of the zone in DDPM timesteps, as the paper's CelebA sweep;
- :func:`extended_gap`: the zone extended down to where the coverage first rises (``C >= level``),
  i.e. the high-``W`` side the paper's sweep found the more influential, reaching below the zone;
- :func:`control_gap`: a gap of the *same training mass* away from (below) a given gap, the control
  that separates "skipping the zone" from "skipping that much training".

All gaps go through the DDPM round trip (:func:`ddpm_round_trip`): EDM noise levels -> the DDPM
timesteps (linear betas, T = 1000) that contain them -> the EDM noise levels of those timesteps, so a
gap is exactly a set of whole DDPM timesteps, as in the paper.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats

from . import checks, edm, regimes

__all__ = ["Gap", "ddpm_round_trip", "zone_gap", "sweep_gaps", "extended_gap", "control_gap", "pareto_front"]


@dataclass(frozen=True)
class Gap:
    """A training-noise gap ``[lo, hi]`` (EDM sigma), its DDPM timesteps ``[t_lo, t_hi]``, the fraction
    ``mass`` of EDM's log-normal training distribution it removes, and the ``rule`` that made it."""

    lo: float
    hi: float
    t_lo: int
    t_hi: int
    mass: float
    rule: str

    @property
    def sigma(self) -> list[float]:
        """``[lo, hi]``: the ``gap`` entry of a training config."""
        return [self.lo, self.hi]

    def __str__(self) -> str:
        return (f"{self.rule}: sigma in [{self.lo:.3g}, {self.hi:.3g}] (DDPM t {self.t_lo}-{self.t_hi}), "
                f"{self.mass:.1%} of the training noise mass")


def _level(level, name: str = "level") -> float:
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ValueError(f"{name} must be a number in (0, 1), got {level!r}")
    return float(level)


def _zone(zone) -> regimes.DangerZone:
    if not isinstance(zone, regimes.DangerZone):
        raise TypeError(f"zone must be a regimes.DangerZone, got {type(zone).__name__}")
    return zone


def _from_timesteps(t_lo: int, t_hi: int, rule: str, P_mean: float, P_std: float) -> Gap:
    sig = regimes.ddpm_sigmas()
    lo, hi = float(sig[t_lo - 1]), float(sig[t_hi - 1])
    return Gap(lo, hi, int(t_lo), int(t_hi), edm.lognormal_mass(lo, hi, P_mean, P_std), rule)


def ddpm_round_trip(interval, rule: str = "gap", *, P_mean: float = -1.2, P_std: float = 1.2) -> Gap:
    """The whole DDPM timesteps (linear betas, T = 1000) that contain the EDM interval, as a :class:`Gap`
    (``regimes.ddpm_timesteps`` then ``regimes.ddpm_sigmas``; the paper states its gaps in timesteps)."""
    lo, hi = checks.interval(interval)
    t_lo, t_hi = regimes.ddpm_timesteps((lo, hi))
    if t_hi <= t_lo:
        raise ValueError(f"interval {interval!r} is narrower than one DDPM timestep")
    return _from_timesteps(t_lo, t_hi, rule, P_mean, P_std)


def zone_gap(zone, *, P_mean: float = -1.2, P_std: float = 1.2) -> Gap:
    """The paper's gap: the danger zone (``W >= weight_level`` and ``C >= coverage_level``), in DDPM steps."""
    z = _zone(zone)
    if z.empty:
        raise ValueError("zone is empty (W and C are never both high): no gap can be placed on it")
    return ddpm_round_trip(z.interval, "danger zone", P_mean=P_mean, P_std=P_std)


def sweep_gaps(zone, fractions=(0.4, 0.7, 1.0), *, P_mean: float = -1.2, P_std: float = 1.2) -> dict[float, Gap]:
    """The paper's sweep (Fig. 5, Fig. 9): gaps ``[t_lo, t_lo + f (t_hi - t_lo)]`` in DDPM timesteps of the
    zone, for each fraction ``f`` in ``(0, 1]``; all start at the zone's low-noise (high-``W``) edge, as the
    paper's [100-200], [100-275], [100-350] do."""
    full = zone_gap(zone, P_mean=P_mean, P_std=P_std)
    out = {}
    for f in fractions:
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1:
            raise ValueError(f"fractions must lie in (0, 1], got {f!r}")
        t_end = max(full.t_lo + 1, full.t_lo + round(f * (full.t_hi - full.t_lo)))
        out[float(f)] = _from_timesteps(full.t_lo, t_end, f"first {f:.0%} of the zone", P_mean, P_std)
    return out


def extended_gap(zone, coverage_level: float = 0.05, *, P_mean: float = -1.2, P_std: float = 1.2) -> Gap:
    """The danger zone extended down to where the coverage first rises: ``[sigma_C, zone upper edge]``
    with ``sigma_C`` the first noise level at which ``C(sigma) >= coverage_level`` (regimes.crossing).
    It keeps the zone's high-noise edge and adds the high-``W``, rising-``C`` side below it."""
    z = _zone(zone)
    lvl = _level(coverage_level, "coverage_level")
    if z.empty:
        raise ValueError("zone is empty (W and C are never both high): no gap can be placed on it")
    s_c = regimes.crossing(z.sigmas, z.coverage, lvl)
    if not math.isfinite(s_c):
        raise ValueError(f"the coverage never crosses coverage_level={lvl} on the zone's grid")
    lo = min(s_c, z.lower)
    return ddpm_round_trip((lo, z.upper), f"zone extended to C >= {lvl:g}", P_mean=P_mean, P_std=P_std)


def control_gap(gap: Gap, *, margin: float = 0.5, P_mean: float = -1.2, P_std: float = 1.2) -> Gap:
    """A gap of the same training mass as ``gap`` (to within one DDPM timestep), entirely below it:
    its upper edge is ``gap.lo * exp(-margin)`` and its lower edge is solved from the log-normal mass
    (the mass above the zone is far too small to hold it). Skipping it removes as much training as
    ``gap`` does, away from the zone: an effect the control also has is not the zone's.
    """
    if not isinstance(gap, Gap):
        raise TypeError(f"gap must be a gaps.Gap, got {type(gap).__name__}")
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not (math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    hi = gap.lo * math.exp(-margin)
    law = stats.norm(P_mean, P_std)
    below = float(law.cdf(math.log(hi)))
    if below <= gap.mass:
        raise ValueError(f"only {below:.1%} of the training mass lies below sigma = {hi:.3g}; "
                         f"a control of mass {gap.mass:.1%} does not fit (reduce margin)")
    lo = math.exp(float(law.ppf(below - gap.mass)))
    t_lo, t_hi = regimes.ddpm_timesteps((lo, hi))
    # The round trip to whole timesteps moves the mass a little: pick the lower timestep that matches best.
    best = min(range(max(1, t_lo - 2), t_lo + 3),
               key=lambda t: abs(_from_timesteps(t, t_hi, "", P_mean, P_std).mass - gap.mass) if t < t_hi else 1.0)
    return _from_timesteps(best, t_hi, f"mass-matched control below ({gap.rule})", P_mean, P_std)


def pareto_front(points) -> list[int]:
    """Indices of the non-dominated points of ``[(memorization, quality), ...]``, lower being better on
    both axes (the frontier of Fig. 9): no other point is at least as good on both and better on one."""
    try:
        pts = [(float(a), float(b)) for a, b in points]
    except (TypeError, ValueError):
        raise ValueError("points must be a sequence of (memorization, quality) pairs") from None
    if not all(math.isfinite(a) and math.isfinite(b) for a, b in pts):
        raise ValueError("points must be finite")
    return [i for i, (a, b) in enumerate(pts)
            if not any(c <= a and d <= b and (c < a or d < b) for c, d in pts)]
