"""What the sidecar learned, by shape only: the admin ``/templates`` endpoint's document.

Learned templates are shown as span kinds and lengths, an id that is a digest, how many
requests each was learned from and the predicted and measured hit rates; the guard's
tracks as their account (write premium, read savings, unread write tokens) and state.
Never any prompt text: the learner holds none, and nothing here reads a request.
"""

from __future__ import annotations

from typing import Any

from promptcache.sidecar.learner import MAX_CANDIDATES, MAX_TEMPLATES, MAX_UNITS, TemplateShape
from promptcache.sidecar.planner import Planner
from promptcache.sidecar.planner.guard import Guard


def shape_json(shape: TemplateShape) -> dict[str, Any]:
    return {
        "id": shape.id,
        "route": shape.route,
        "model": shape.model,
        "state": shape.state,
        "requests": shape.samples,
        "version": shape.version,
        "spans": [{"kind": s.kind, "chars": s.chars} for s in shape.spans],
        "predictedHitRate": _rate(shape.predicted_hit_rate),
        "measuredHitRate": _rate(shape.measured_hit_rate),
    }


def _rate(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def templates_report(planner: Planner) -> dict[str, Any]:
    """The ``/templates`` document for ``planner``."""
    learner = getattr(planner, "learner", None)
    guard = getattr(planner, "guard", None)
    report: dict[str, Any] = {
        "learning": learner is not None,
        "caps": {"templates": MAX_TEMPLATES, "candidates": MAX_CANDIDATES, "units": MAX_UNITS},
        "templates": [],
        "guard": [],
    }
    if learner is not None:
        report["units"] = learner.units
        report["templates"] = [shape_json(s) for s in learner.shapes()]
    if isinstance(guard, Guard):
        report["guard"] = [
            {
                "key": key,
                "tier": tier,
                "policy": track.policy,
                "source": track.source,
                "state": track.state,
                "writePremiumTokens": round(track.premium, 1),
                "readSavedTokens": round(track.saved, 1),
                "unreadWrites": track.unread_writes,
                "unreadWriteTokens": track.unread_tokens,
                "withdrawals": track.withdrawals,
                "nextProbeIn": track.wait if track.state == "withdrawn" else None,
            }
            for key, tier, track in reversed(guard.tracks())
        ]
    return report
