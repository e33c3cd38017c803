"""The files and columns of `enriched/` (DESIGN.md §6), shared by the writer (build.py) and the reader.

Kept apart from build.py so that reading training data never imports the generation stack.

metadata.jsonl holds one line per *written* triplet. For each generated member m (positive,
negative) it records what was requested (`m_gender`, `m_race`, `m_age_group`) and what the
classifier measured on the kept image (`m_measured_*`, null when it measured nothing: no
classifier, or a status other than `ok` such as `no_face` / `ambiguous`), with `m_verified` true
only when the measurement agrees with the request.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from t2i_debias.core.vocab import MEASURABLE

METADATA = "metadata.jsonl"
JOURNAL = "_journal.jsonl"
SKIPPED = "_skipped.csv"
REJECTED = "_rejected.csv"
FIDELITY = "fidelity.csv"
BALANCE = "balance.csv"

MEMBERS: tuple[str, ...] = ("anchor", "positive", "negative")
GENERATED: tuple[str, ...] = ("positive", "negative")  # the members a generator draws
FILE_FIELDS: tuple[str, ...] = ("file_name", "positive_file_name", "negative_file_name")

# What a classifier measured on one generated member: attribute (str | None) and confidence (float | None).
MEASURED_ATTRS: tuple[str, ...] = MEASURABLE
MEASURED_CONFS: tuple[str, ...] = ("gender_conf", "race_conf", "age_conf")


def measured_fields(member: str) -> tuple[str, ...]:
    """`<member>_measured_gender`, ..., `<member>_measured_age_conf`, `<member>_verified`."""
    return (*(f"{member}_measured_{a}" for a in MEASURED_ATTRS),
            *(f"{member}_measured_{c}" for c in MEASURED_CONFS), f"{member}_verified")


@dataclass(frozen=True)
class TripletRecord:
    """One metadata.jsonl line; the field order is the line's key order (METADATA_FIELDS)."""

    file_name: str  # the anchor, as HF imagefolder names its image column's file
    positive_file_name: str
    negative_file_name: str
    anchor_text: str
    positive_text: str
    negative_text: str
    occupation: str
    person_id: str
    anchor_gender: str
    anchor_race: str
    anchor_age_group: str | None
    positive_gender: str
    positive_race: str
    positive_age_group: str | None
    negative_gender: str
    negative_race: str
    negative_age_group: str | None
    generator: str
    seed: int
    positive_tries: int
    positive_agreement: bool | None
    negative_tries: int
    negative_agreement: bool | None
    positive_measured_gender: str | None  # measured_fields("positive")
    positive_measured_race: str | None
    positive_measured_age_group: str | None
    positive_measured_gender_conf: float | None
    positive_measured_race_conf: float | None
    positive_measured_age_conf: float | None
    positive_verified: bool
    negative_measured_gender: str | None  # measured_fields("negative")
    negative_measured_race: str | None
    negative_measured_age_group: str | None
    negative_measured_gender_conf: float | None
    negative_measured_race_conf: float | None
    negative_measured_age_conf: float | None
    negative_verified: bool


METADATA_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(TripletRecord))

# _rejected.csv: one row per generated member that failed verification in a dropped triplet.
REJECTED_COLUMNS: tuple[str, ...] = (
    "person_id", "occupation", "member", "reason", "requested_gender", "requested_race", "requested_age_group",
    "measured_status", "measured_gender", "measured_race", "measured_age_group",
    "measured_gender_conf", "measured_race_conf", "measured_age_conf", "tries",
)
# fidelity.csv: per occupation x generated member x requested (gender, race).
FIDELITY_COLUMNS: tuple[str, ...] = (
    "occupation", "member", "gender", "race", "requested", "verified", "verified_rate", "written", "rejected",
    "tries_total", "tries_mean",
)
# balance.csv: per occupation, the male share of the verified anchor+positive pool of the written triplets.
BALANCE_COLUMNS: tuple[str, ...] = (
    "occupation", "planned", "written", "rejected", "skipped", "written_rate", "anchors_male_planned",
    "anchors_male_written", "positives_verified", "pool_n", "pool_male_share", "balanced", "warning",
)
