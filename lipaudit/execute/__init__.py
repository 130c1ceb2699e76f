"""Running the IR: the executor, the faithfulness check against the model's runtime, and the
empirical lower bound. Each op's run lives beside its rule, in ``lipaudit.ops``."""

from .executor import GraphInterpreter, can_execute, execute, supported_ops

__all__ = ["GraphInterpreter", "can_execute", "execute", "supported_ops"]
