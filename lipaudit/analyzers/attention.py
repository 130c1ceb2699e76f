"""Attention: dot-product self-attention is not globally Lipschitz (Kim et al., 2021)."""

from __future__ import annotations

from ..ir import Node
from .context import AnalysisContext
from .factor import Factor
from .registry import rule

FAMILY = "attention"
REASON = "dot-product attention is not globally Lipschitz (Kim et al. 2021): its scores multiply two variable values"


@rule("Attention", summary="unbounded (Kim et al. 2021)", family=FAMILY, certified=False)
@rule("MultiHeadAttention", "Attention", summary="unbounded (Kim et al. 2021)", family=FAMILY, certified=False,
      domain="com.microsoft")
def attention(node: Node, ctx: AnalysisContext) -> Factor:
    return Factor.unbounded(REASON)
