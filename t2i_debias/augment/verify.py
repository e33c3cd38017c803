"""Verification of generated members: does the classifier see what was asked, and what did it measure.

A member agrees when its Prediction found a face of the requested gender and race (and age group
when captions name it); its outcome records the request, the measurement and why it failed.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from t2i_debias.augment.captions import CaptionComposer
from t2i_debias.augment.counterfactual import Demographics
from t2i_debias.augment.planner import PlannedTriplet
from t2i_debias.augment.schema import MEASURED_ATTRS, MEASURED_CONFS
from t2i_debias.core.vocab import MEASURABLE


def agrees(pred: Any, want: Demographics, check_age: bool) -> bool:
    """True when a Prediction found a face with the requested gender and race (and age group).

    The age group is checked only when asked for and when one was requested: a member whose age
    group is unknown (labels gave none) has no age words in its caption, so any age agrees.
    """
    if not pred.ok or pred.gender != want.gender or pred.race != want.race:
        return False
    return not check_age or want.age_group is None or pred.age_group == want.age_group


def _conf(value: Any, what: str) -> float | None:
    if value is None:
        return None
    v = float(value)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"classifier gave {what} {v!r}, outside [0, 1]")
    return v


def measurement(pred: Any) -> dict[str, Any]:
    """What a Prediction measured (MEASURED_ATTRS + MEASURED_CONFS); all None unless its status is ok.

    Age confidence comes from `extra["age_group_conf"]` when a backend gives one (clip), else None.
    """
    keys = (*MEASURED_ATTRS, *MEASURED_CONFS)
    if pred is None or not pred.ok:
        return dict.fromkeys(keys)
    return {"gender": pred.gender, "race": pred.race, "age_group": pred.age_group,
            "gender_conf": _conf(pred.gender_conf, "gender_conf"), "race_conf": _conf(pred.race_conf, "race_conf"),
            "age_conf": _conf(pred.extra.get("age_group_conf"), "age_group_conf")}


def _member_outcome(want: Demographics, pred: Any, agreed: bool | None, tries: int,
                    check_age: bool) -> dict[str, Any]:
    """What one generated member was asked for, what was measured, and why it failed (None when verified)."""
    meas = measurement(pred)
    if agreed:
        reason = None
    elif pred is None:
        reason = "not measured"
    elif not pred.ok:
        reason = pred.status
    else:  # the attributes `agrees` checked that differ
        checked = MEASURABLE if check_age and want.age_group is not None else tuple(a for a in MEASURABLE if a != "age_group")
        reason = "mismatch: " + ", ".join(k for k in checked if meas[k] != getattr(want, k))
    return {"requested": asdict(want), "status": None if pred is None else pred.status, "measured": meas,
            "verified": bool(agreed), "tries": tries, "reason": reason}


def measured_caption(composer: CaptionComposer, t: PlannedTriplet, outcome: dict[str, Any]) -> str:
    """The caption of an unverified member: from its measured attributes, or the anchor's neutral caption."""
    meas = outcome["measured"]
    if meas["gender"] is None or meas["race"] is None:
        return t.anchor_text
    return composer.attribute(t.person.occupation, Demographics(meas["gender"], meas["race"], meas["age_group"]))


__all__ = ["agrees", "measured_caption", "measurement"]
