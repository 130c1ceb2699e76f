"""lipaudit's version, in a leaf module: the report and the renderers name it without importing the
package's front door (``lipaudit/__init__.py``, which reaches up to the API)."""

__version__ = "0.1.0"
