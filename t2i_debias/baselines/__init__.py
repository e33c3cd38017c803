"""SOTA baselines on one base model (DESIGN.md §5): one module per method, one interface for all.

`make_method(name, base_pipe, inputs)` returns a `Method` whose `generate(prompts, occupations, seeds, gen)`
gives one PIL image per item, image i from seed `seeds[i]`, like every evaluated model.
"""

from t2i_debias.baselines.base import GenParams, Method, MethodInputs, NotApplicable
from t2i_debias.baselines.registry import METHODS, make_method, method_class

__all__ = ["METHODS", "GenParams", "Method", "MethodInputs", "NotApplicable", "make_method", "method_class"]
