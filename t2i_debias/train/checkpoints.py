"""Training checkpoints: <out>/checkpoints/checkpoint-<step>/ (accelerate's state, the EMA state in
safetensors, the log so far), the pruning of old ones, and which one a run resumes from.

A checkpoint is built in a temp folder and renamed into place, so a kill never leaves half of one.
`_train_hash.txt` records the training config the checkpoints were made with: `latest` resumes only
checkpoints of the same config.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

from t2i_debias.train import outputs

log = logging.getLogger(__name__)

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
# The EMA weights of a checkpoint, in safetensors (never a pickle: accelerate's custom-state files are
# loaded with torch.load(weights_only=False), so a planted one would run code on resume).
EMA_STATE = "ema.safetensors"


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of the complete checkpoints in `folder`, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_RE.match(p.name)) and p.is_dir()]
    return sorted(found)


def checkpoint_step(path: Path) -> int:
    """The optimizer step a checkpoint-<step> folder was saved at."""
    return int(CHECKPOINT_RE.match(path.name).group(1))


def find_resume(ckpt_dir: Path, spec: str, train_hash: str, max_step: int | None = None) -> Path | None:
    """The checkpoint to resume from: `latest` (the newest at or below `max_step`, if it was made with this
    training config) or a given checkpoint folder."""
    if not spec:
        return None
    if spec == "latest":
        tag = ckpt_dir / "_train_hash.txt"
        found = [p for s, p in list_checkpoints(ckpt_dir) if max_step is None or s <= max_step]
        if not found:
            return None
        if not tag.exists() or tag.read_text().strip() != train_hash:
            log.warning("checkpoints in %s were made with another training config: starting fresh", ckpt_dir)
            return None
        return found[-1]
    p = Path(spec)
    if not p.is_absolute() and not p.exists():
        p = ckpt_dir / spec
    if not p.is_dir() or not CHECKPOINT_RE.match(p.name):
        raise FileNotFoundError(f"resume_from_checkpoint: {spec!r} is not a checkpoint-N folder")
    return p


def safe_to_resume(resume: Path | None, ema: Any) -> Path | None:
    """`resume`, unless it holds a pickled custom state or lacks the EMA state a run with EMA needs."""
    if resume is not None and (any(resume.glob("custom_checkpoint_*"))
                               or (ema is not None and not (resume / EMA_STATE).is_file())):
        # accelerate would unpickle custom_checkpoint_*.pkl with weights_only=False (code execution)
        log.warning("%s holds a pickled custom state or lacks %s (an older version's checkpoint, or a planted "
                    "file): not resumed, starting fresh", resume, EMA_STATE)
        return None
    return resume


def save_checkpoint(accelerator: Any, ckpt_dir: Path, step: int, rows: list[dict[str, Any]], thash: str,
                    total_limit: int, ema: Any = None) -> None:
    """save_state into a temp folder (plus the EMA state in safetensors), then rename to checkpoint-<step>
    (with the log so far); prune old ones."""
    tmp = ckpt_dir / f".checkpoint-{step}.tmp"
    final = ckpt_dir / f"checkpoint-{step}"
    if accelerator.is_main_process:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        (ckpt_dir / "_train_hash.txt").write_text(thash + "\n")
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if ema is not None:
            save_ema(ema, tmp / EMA_STATE)
        outputs.write_log(tmp / "training_log.csv", rows)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        if total_limit > 0:
            for _, old in list_checkpoints(ckpt_dir)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
        log.info("saved %s", final)
    accelerator.wait_for_everyone()


def save_ema(ema: Any, path: Path) -> None:
    """The EMA state in safetensors: its shadow weights as tensors, its counters as JSON metadata."""
    from safetensors.torch import save_file

    state = ema.state_dict()
    shadow = state.pop("shadow_params")
    save_file({f"shadow.{i}": t.detach().contiguous().cpu() for i, t in enumerate(shadow)}, str(path),
              metadata={"ema": json.dumps(state, sort_keys=True)})


def load_ema(ema: Any, path: Path) -> None:
    """Restore an EMA state written by `save_ema` (safetensors only; no pickle is ever read)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        state = json.loads(f.metadata()["ema"])
        shadow = [f.get_tensor(f"shadow.{i}") for i in range(len(list(f.keys())))]
    if len(shadow) != len(ema.shadow_params):
        raise ValueError(f"{path}: {len(shadow)} EMA tensors for {len(ema.shadow_params)} trained tensors")
    ema.load_state_dict({**state, "shadow_params": shadow})
