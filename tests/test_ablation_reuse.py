"""The ablation reuses a recorded score by recipe: a renamed arm (same seed, recipe, steps and guidance) is not
trained again, and nothing else is reused."""

from __future__ import annotations

from tests.helpers.scripts import load_script

ablation = load_script("scripts/ablation.py")


def row(arm: str, recipe: str, steps: int = 40, guidance: float = 4.0, seed: int = 0) -> dict:
    """A recorded score row with the keys the reuse reads."""
    return {"seed": seed, "arm": arm, "recipe": recipe, "steps": steps, "guidance": guidance, "gender_tvd": 0.1}


def test_renamed_arm_inherits_each_step_and_guidance_of_its_recipe() -> None:
    every = [row("old name", "r1", 20), row("old name", "r1", 40), row("old name", "r1", 40, 7.5), row("x", "r2")]
    got = ablation.reused_rows(every, 0, "new name", "r1", [20, 40], [4.0, 7.5], set())
    assert sorted((r["steps"], r["guidance"]) for r in got) == [(20, 4.0), (40, 4.0), (40, 7.5)]
    assert {r["arm"] for r in got} == {"new name"} and {r["reused_from"] for r in got} == {"old name"}
    assert all(r["gender_tvd"] == 0.1 for r in got)


def test_no_reuse_across_recipe_seed_or_done() -> None:
    every = [row("a", "r1"), row("a", "r1", seed=1), row("b", "r2")]
    assert ablation.reused_rows(every, 0, "c", "r3", [40], [4.0], set()) == []  # another recipe
    assert ablation.reused_rows([row("a", "r1", seed=1)], 0, "c", "r1", [40], [4.0], set()) == []  # another seed
    assert ablation.reused_rows(every, 0, "c", "r1", [40], [4.0], {(0, "c", 40, 4.0)}) == []  # already scored
    assert ablation.reused_rows([{**row("a", "r1"), "recipe": None}], 0, "c", None, [40], [4.0], set()) == []


def test_a_reused_row_names_the_first_arm_that_was_scored() -> None:
    every = [row("a", "r1"), {**row("b", "r1"), "reused_from": "a"}]
    got = ablation.reused_rows(every[1:], 0, "c", "r1", [40], [4.0], set())
    assert got[0]["reused_from"] == "a"
