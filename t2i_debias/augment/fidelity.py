"""How faithful the counterfactuals are, and whether each occupation's training pool ends up balanced.

Computed from the enriched stage's per-triplet outcomes (build.py) and written next to metadata.jsonl:
- `fidelity.csv`: per occupation x generated member x requested (gender, race): how many were
  requested, verified, written, rejected, and the tries used (schema.FIDELITY_COLUMNS).
- `balance.csv`: per occupation, the male share of the pool training sees (anchors of the written
  triplets + their *verified* positives) and a warning naming why an occupation could not be
  balanced (pool outside `balance_band`, or fewer than `min_written_rate` of its triplets written).
- `_rejected.csv` rows: one per unverified member of a dropped triplet (schema.REJECTED_COLUMNS).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from t2i_debias.augment.schema import BALANCE_COLUMNS, FIDELITY_COLUMNS, GENERATED, REJECTED_COLUMNS
from t2i_debias.core.vocab import MEASURABLE

OUTCOMES: tuple[str, ...] = ("written", "rejected", "skipped")


@dataclass(frozen=True)
class TripletOutcome:
    """One planned triplet: its occupation, the anchor's gender, and what became of it.

    `members[m]` (m in GENERATED; empty when skipped) holds `requested` (gender, race, age_group),
    `measured` (schema.MEASURED_ATTRS/CONFS), `status`, `verified`, `tries` and `reason`.
    """

    occupation: str
    anchor_gender: str
    outcome: str
    members: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {self.outcome!r}; expected one of {OUTCOMES}")


def rejected_rows(person_id: str, occupation: str, members: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The _rejected.csv rows of one dropped triplet: one per member that was not verified."""
    rows = []
    for m in GENERATED:
        o = members[m]
        if o["verified"]:
            continue
        req, meas = o["requested"], o["measured"]
        rows.append({"person_id": person_id, "occupation": occupation, "member": m, "reason": o["reason"],
                     **{f"requested_{k}": req[k] for k in MEASURABLE},
                     "measured_status": o["status"], **{f"measured_{k}": v for k, v in meas.items()},
                     "tries": o["tries"]})
    assert all(tuple(r) == REJECTED_COLUMNS for r in rows)
    return rows


def fidelity_table(outcomes: Sequence[TripletOutcome]) -> pd.DataFrame:
    """Per occupation x member x requested (gender, race): requested, verified, written, rejected, tries."""
    acc: dict[tuple[str, str, str, str], Counter[str]] = defaultdict(Counter)
    for o in outcomes:
        for m, mo in o.members.items():
            c = acc[(o.occupation, m, mo["requested"]["gender"], mo["requested"]["race"])]
            c["requested"] += 1
            c["verified"] += bool(mo["verified"])
            c["written"] += o.outcome == "written"
            c["rejected"] += o.outcome == "rejected"
            c["tries_total"] += int(mo["tries"])
    order = {m: i for i, m in enumerate(GENERATED)}
    rows = []
    for (occ, m, g, r), c in sorted(acc.items(), key=lambda kv: (kv[0][0], order[kv[0][1]], kv[0][2], kv[0][3])):
        n = c["requested"]
        rows.append({"occupation": occ, "member": m, "gender": g, "race": r, "requested": n,
                     "verified": c["verified"], "verified_rate": c["verified"] / n, "written": c["written"],
                     "rejected": c["rejected"], "tries_total": c["tries_total"], "tries_mean": c["tries_total"] / n})
    return pd.DataFrame(rows, columns=list(FIDELITY_COLUMNS))


def _share(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def _why_unwritten(group: Sequence[TripletOutcome]) -> str:
    """'unverified: 40 positives asked as woman, 2 as man, 3 negatives (mismatch: gender 41, ambiguous 4)'."""
    asked: Counter[str] = Counter()
    negatives = 0
    reasons: Counter[str] = Counter()
    for o in group:
        if o.outcome != "rejected":
            continue
        for m, mo in o.members.items():
            if mo["verified"]:
                continue
            reasons[str(mo["reason"])] += 1
            if m == "positive":
                asked[mo["requested"]["gender"]] += 1
            else:
                negatives += 1
    parts = [f"{n} positive{'s' if n != 1 else ''} asked as {g}" for g, n in sorted(asked.items(), key=lambda x: -x[1])]
    if negatives:
        parts.append(f"{negatives} negative{'s' if negatives != 1 else ''}")
    if not parts:
        return ""
    why = ", ".join(f"{r} {n}" for r, n in reasons.most_common())
    return f"unverified: {', '.join(parts)} ({why})"


def balance_table(outcomes: Sequence[TripletOutcome], band: tuple[float, float] = (0.4, 0.6),
                  min_written_rate: float = 0.9) -> pd.DataFrame:
    """Per occupation: written rate, anchors' and the verified anchor+positive pool's male share, and a warning.

    The pool is what training sees: the anchors of the written triplets plus those of their
    positives that were verified (a positive's gender is then the requested one). `balanced` is
    the pool's male share within `band`; `warning` is empty unless it is not, or fewer than
    `min_written_rate` of the occupation's planned triplets were written.
    """
    lo, hi = band
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"[augment] balance_band must be [low, high] within [0, 1], got {list(band)}")
    groups: dict[str, list[TripletOutcome]] = defaultdict(list)
    for o in outcomes:
        groups[o.occupation].append(o)
    rows = []
    for occ in sorted(groups):
        group = groups[occ]
        counts = Counter(o.outcome for o in group)
        written = [o for o in group if o.outcome == "written"]
        pos_ok = [o for o in written if o.members["positive"]["verified"]]
        pool = [o.anchor_gender == "man" for o in written] + [
            o.members["positive"]["requested"]["gender"] == "man" for o in pos_ok]
        share = _share(pool)
        balanced = share is not None and lo <= share <= hi
        rate = counts["written"] / len(group)
        warn = []
        if share is None:
            warn.append("no written triplets")
        elif not balanced:
            short = "woman" if share > hi else "man"
            asked = [o for o in group if o.members and o.members["positive"]["requested"]["gender"] == short]
            ok = sum(o.members["positive"]["verified"] for o in asked)
            warn.append(f"pool {share:.0%} men, outside {lo:.0%}-{hi:.0%}: {ok} of {len(asked)} positives "
                        f"asked as {short} verified")
        if rate < min_written_rate:
            warn.append(f"only {counts['written']} of {len(group)} triplets written ({rate:.0%} < "
                        f"{min_written_rate:.0%})")
            why = _why_unwritten(group)
            if why:
                warn.append(why)
            if counts["skipped"]:
                warn.append(f"{counts['skipped']} skipped (anchor image missing or unreadable)")
        rows.append({
            "occupation": occ, "planned": len(group), "written": counts["written"], "rejected": counts["rejected"],
            "skipped": counts["skipped"], "written_rate": rate,
            "anchors_male_planned": _share([o.anchor_gender == "man" for o in group]),
            "anchors_male_written": _share([o.anchor_gender == "man" for o in written]),
            "positives_verified": len(pos_ok), "pool_n": len(pool), "pool_male_share": share,
            "balanced": balanced, "warning": "; ".join(warn),
        })
    return pd.DataFrame(rows, columns=list(BALANCE_COLUMNS))
