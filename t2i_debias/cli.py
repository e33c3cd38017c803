"""Shared command-line plumbing for the stage scripts.

Every stage script runs from a config file, from flags alone, or both (flags win). Flags are
generated from the config dataclasses, so `--help` always shows the current defaults.
Flags of a script's own sections are `--field`; flags of other sections are `--section.field`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from t2i_debias.core.config import SECTIONS, Config, coerce, field_types, finish, load_config, set_option
from t2i_debias.core.errors import ConfigError, UserError
from t2i_debias.core.layout import RunLayout
from t2i_debias.core.options import RANGES

log = logging.getLogger("t2i_debias")
# A script's own flags applied to the config before the checks: overrides(args, cfg).
Overrides = Callable[[argparse.Namespace, Config], None]


def setup_env() -> None:
    """Default the model caches to the project's .cache (never the user's home) unless already set."""
    root = Path(os.environ.get("T2I_DEBIAS_CACHE_ROOT", Path.cwd() / ".cache"))
    for var, sub in (("DEEPFACE_HOME", "deepface"), ("TORCH_HOME", "torch"), ("HF_HOME", "hf"),
                     ("MPLCONFIGDIR", "mpl"), ("T2I_DEBIAS_CACHE", "t2i_debias")):
        os.environ.setdefault(var, str(root / sub))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def setup_logging(verbose: bool = False) -> None:
    """Plain timestamped logs on stderr."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def _help(default: Any, doc: str = "", allowed: str = "") -> str:
    return f"{doc} {'range ' + allowed + ' ' if allowed else ''}(default: {default!r})".strip()


def add_section_flags(parser: argparse.ArgumentParser, section: str, primary: bool) -> None:
    """Add one flag per field of a config section; defaults are shown but not applied (SUPPRESS)."""
    cls = SECTIONS[section]
    group = parser.add_argument_group(f"[{section}] options" + ("" if primary else f" (as --{section}.KEY)"))
    defaults = cls()
    for name, typ in field_types(cls).items():
        flag = f"--{name}" if primary else f"--{section}.{name}"
        dest = f"cfg__{section}__{name}"
        default = getattr(defaults, name)
        rng = RANGES.get(section, {}).get(name)
        kw: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS,
                              "help": _help(default, allowed=rng.text() if rng else "").replace("%", "%%")}
        origin = typing.get_origin(typ)
        if typ is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif origin is list:
            (inner,) = typing.get_args(typ)
            group.add_argument(flag, nargs="*", type=inner, metavar=name.upper(), **kw)
        elif origin is dict:
            group.add_argument(flag, nargs="*", metavar="KEY=VALUE", **kw)
        else:
            group.add_argument(flag, type=typ, metavar=name.upper(), **kw)


def build_parser(description: str, sections: list[str], other_sections: list[str] | None = None
                 ) -> argparse.ArgumentParser:
    """A parser with --config/--run_dir/--force/--smoke and one flag per field of `sections`."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=None, help="TOML run config (flags override it)")
    p.add_argument("--run_dir", "--run-dir", type=Path, default=None,
                   help="run folder (default: <run.root>/<run.name>)")
    p.add_argument("--force", action="store_true", help="rerun even if the stage manifest matches")
    p.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    for s in sections:
        add_section_flags(p, s, primary=True)
    for s in other_sections or []:
        if s not in sections:
            add_section_flags(p, s, primary=False)
    return p


def config_from_args(args: argparse.Namespace, overrides: Overrides | None = None) -> Config:
    """Load the config file (if any), apply the explicitly given flags (then `overrides(args, cfg)`, a script's
    own flags), the presets, and check every value as load_config does."""
    cfg = load_config(args.config, complete=False)
    for dest, value in vars(args).items():
        if not dest.startswith("cfg__"):
            continue
        _, section, name = dest.split("__", 2)
        typ = field_types(SECTIONS[section])[name]
        if typing.get_origin(typ) is dict:
            value = _parse_kv(value, typ, f"--{name}")
        set_option(cfg, section, name, coerce(value, typ, f"flag --{name}"))
    if overrides is not None:
        overrides(args, cfg)
    if args.run_dir is not None:
        run_dir = Path(args.run_dir) if Path(args.run_dir).name else Path(args.run_dir).resolve()
        cfg.run.root, cfg.run.name = str(run_dir.parent), run_dir.name
    return finish(cfg, "command line" if args.config is None else f"{args.config} + command line")


def _parse_kv(items: list[str], typ: Any, flag: str) -> dict[str, Any]:
    _, vt = typing.get_args(typ)
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{flag}: expected KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k] = vt(v)
        except ValueError:
            raise ConfigError(f"{flag}: {k}={v!r} is not a {vt.__name__}") from None
    return out


def _user_error_hook(verbose: bool) -> Any:
    """A sys.excepthook printing a UserError as one line (the traceback only with --verbose); bugs keep theirs."""
    default = sys.__excepthook__

    def hook(typ: type[BaseException], value: BaseException, tb: Any) -> None:
        if issubclass(typ, KeyboardInterrupt) and not verbose:  # Python then exits by SIGINT: a shell sees 130
            print("interrupted: finished stages and files are intact; rerun the same command to resume",
                  file=sys.stderr)
            return
        if issubclass(typ, UserError) and not verbose:
            print(f"error: {value}  (--verbose shows the traceback)", file=sys.stderr)
            return
        default(typ, value, tb)

    return hook


def parse(description: str, sections: list[str], other_sections: list[str] | None = None,
          argv: list[str] | None = None, extra: Any = None, overrides: Overrides | None = None
          ) -> tuple[argparse.Namespace, Config]:
    """Parse argv for a stage script (`extra(parser)` may add flags, `overrides(args, cfg)` apply them before the
    checks); torch gets every available core."""
    setup_env()
    parser = build_parser(description, sections, other_sections)
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    sys.excepthook = _user_error_hook(args.verbose)
    from t2i_debias.core.threads import use_available_cores

    try:
        use_available_cores()
    except ValueError as e:  # a malformed OMP_NUM_THREADS / LOCAL_WORLD_SIZE
        parser.error(str(e))
    try:
        cfg = config_from_args(args, overrides)
    except ConfigError as e:
        parser.error(str(e))
    from t2i_debias.toyworld import plugin

    plugin.register()  # the toy world plugs in from above: `toy:` models and the "toy" labels backend
    from t2i_debias.core.locks import claim_run

    claim_run(cfg.run_dir)  # one writer per run: locked when the first stage starts (DESIGN.md §6)
    return args, cfg


def section_defaults(section: str) -> dict[str, Any]:
    """Default values of a section as a dict."""
    return dataclasses.asdict(SECTIONS[section]())


# ----------------------------------------------------------------------------- finetune/ training scripts
def _extra(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("diffusers-style options")
    g.add_argument("--pretrained_model_name_or_path", default=None,
                   help="base pipeline: hub id, folder, or tiny:sd (default: [run] base_model)")
    g.add_argument("--train_data_dir", type=Path, default=None,
                   help="enriched/ folder with metadata.jsonl (default: <run_dir>/enriched)")
    g.add_argument("--output_dir", type=Path, default=None, help="where to write (default: <run_dir>/models/<mode>)")
    g.add_argument("--seed", type=int, default=None, help="training seed (default: [run] seed)")
    g.add_argument("--rank", type=int, default=None, help="alias of --lora_rank")


def _apply_extra(args: argparse.Namespace, cfg: Config) -> None:
    """--seed and --rank (diffusers' names) set [run] seed and [train] lora_rank, checked like any flag."""
    if args.seed is not None:
        cfg.run.seed = args.seed
    if args.rank is not None:
        cfg.train.lora_rank = args.rank


def main_for_mode(mode: str, description: str, argv: list[str] | None = None) -> Path:
    """Parse flags, then train `mode` into the output folder (skipped when its manifest matches)."""
    from t2i_debias.models import base_model, resolve_model
    from t2i_debias.stages.models import train_stage

    args, cfg = parse(description, ["train"], ["run"], argv, _extra, _apply_extra)
    base = resolve_model(args.pretrained_model_name_or_path, cfg) if args.pretrained_model_name_or_path \
        else base_model(cfg)
    lay = RunLayout(cfg.run_dir)
    data = args.train_data_dir or lay.enriched
    out = args.output_dir or lay.model(mode)
    train_stage(cfg, mode, base, data, out, force=args.force)
    return Path(out)
