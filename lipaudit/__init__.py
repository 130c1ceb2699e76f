"""lipaudit: certified upper bounds on the Lipschitz constant of trained networks."""

__version__ = "0.1.0"


def audit(path, **settings):
    """Audit a model file: ``audit("model.onnx", input_shape=["x=1x3x32x32"]) -> Report``."""
    from .pipeline import audit as run_audit

    return run_audit(path, **settings)


__all__ = ["__version__", "audit"]
