"""Lipschitz rules, one module per op family. Importing this package fills the registry."""

from . import activation, arithmetic, attention, linear, normalization, pooling, resize, structural  # noqa: F401
from .context import AnalysisContext, RuleInputError
from .factor import Factor
from .registry import DuplicateRuleError, all_rules, lookup, rule

__all__ = ["AnalysisContext", "DuplicateRuleError", "Factor", "RuleInputError", "all_rules", "lookup", "rule"]
