"""Settings: defaults < [tool.lipaudit] in pyproject.toml < command-line flags.

```toml
[tool.lipaudit]
max_lipschitz = 50.0
method = "auto"
device = "auto"
input_shape = ["x=1x3x224x224"]
allow_incomplete = false
max_layer_factor = 10.0            # or a table: {"stem.*" = 4.0, "*" = 10.0}
in_memory_limit = "2GiB"           # external data above this stays on disk, read one layer at a time
workers = 4                        # for the whole run: worker processes (or CPUs of a local Ray cluster)
ray = "auto"                       # for the whole run: true (a local cluster), "auto" or an address
input_range = "0:1"                # a local bound on this box of inputs; or ["x=0:1"], or {x = [0, 1]}
around = "x=centre.npy"            # or: a local bound on the box of ℓ∞ radius `radius` around this input
radius = 1e-3
lower_bound_time = 60              # stop --lower-bound's search after this (or "2min"); default: no time limit
bound = "recursion"                # or "product": how the layers' factors combine into the network bound
max_branch_lipschitz = 0.9         # every residual branch g of x + g(x) under this: the net is invertible
rtol = 1e-5                        # the gate passes a bound up to max_lipschitz·(1 + rtol) (default 0)
recursion_budget = 0.5             # the recursion's work, in multiples of the layers' norms (default 0.3; "inf": all)
recursion_time = "2min"            # also stop the recursion after this (default: no time limit; makes the
                                   # figure depend on the machine: the report says reproducible: false)

[tool.lipaudit.models."models/critic_*.onnx"]
max_lipschitz = 1.0
```
"""

from __future__ import annotations

import fnmatch
import math
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .domain.around import anchor_centres, check_around, check_radius
from .domain.inputs import check_input_ranges
from .errors import UsageError
from .ir.graph import written_names
from .options import AuditOptions, InputRange, check_choice
from .parallel import LOCAL_RAY
from .report import BranchViolation, LayerReport, LayerViolation, ResidualBranch, within

KEYS = {
    "max_lipschitz",
    "method",
    "device",
    "input_shape",
    "allow_incomplete",
    "max_layer_factor",
    "in_memory_limit",
    "workers",
    "ray",
    "input_range",
    "around",
    "radius",
    "lower_bound_time",
    "recursion_budget",
    "recursion_time",
    "bound",
    "max_branch_lipschitz",
    "rtol",
}
# Keys about how the whole run is carried out, not about one model: no per-model override.
RUN_KEYS = {"workers", "ray"}

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?(?:e\d+)?)\s*([kmgt]i?b?|b)?\s*", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|min|m|h)?\s*", re.IGNORECASE)
_SECONDS = {"": 1.0, "s": 1.0, "sec": 1.0, "ms": 1e-3, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(text: str | int | float) -> float:
    """Seconds from '60s', '2min', '1.5h', '500ms' or a plain number. ValueError for anything else."""
    if isinstance(text, bool):
        raise ValueError(f"not a duration: {text!r}")
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        match = _DURATION.fullmatch(str(text))
        if match is None:
            raise ValueError(f"not a duration: {text!r} (write e.g. 60s, 2min or 90)")
        seconds = float(match.group(1)) * _SECONDS[(match.group(2) or "").lower()]
    if not seconds > 0:
        raise ValueError(f"a duration must be positive, not {text!r}")
    return seconds


def check_rtol(value: Any) -> float:
    """The gate's relative tolerance: a finite number ≥ 0. ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"rtol must be a number, not {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"rtol must be a finite number at least 0, not {value!r}")
    return float(value)


def parse_budget(text: str | int | float) -> float | None:
    """A recursion budget: a number >= 0 (multiples of the layers' norms' work), or 'inf' / 'all' for
    no limit (None). ValueError for anything else."""
    if isinstance(text, bool):
        raise ValueError(f"not a budget: {text!r}")
    if isinstance(text, str) and text.strip().lower() in ("inf", "all", "unlimited"):
        return None
    try:
        budget = float(text)
    except ValueError:
        raise ValueError(f"not a budget: {text!r} (write a number such as 4, or inf)") from None
    if math.isnan(budget) or budget < 0:
        raise ValueError(f"a budget must be a number >= 0, not {text!r}")
    return None if math.isinf(budget) else budget


def parse_size(text: str | int | float) -> int:
    """Bytes from '2GiB', '512MiB', '1.5GB', '3e9' or a plain number: KiB/MiB/GiB are powers of 1024,
    KB/MB/GB (or K/M/G) of 1000. ValueError for anything else."""
    if isinstance(text, bool):
        raise ValueError(f"not a size: {text!r}")
    if isinstance(text, (int, float)):
        if text < 0:
            raise ValueError(f"a size cannot be negative: {text}")
        return int(text)
    match = _SIZE.fullmatch(str(text))
    if match is None:
        raise ValueError(f"not a size: {text!r} (write e.g. 2GiB, 512MiB or 3e9)")
    number, unit = float(match.group(1)), (match.group(2) or "").lower()
    scale = 1024 ** " kmgt".index(unit[0]) if "i" in unit else _UNITS[unit[:1]]
    return int(number * scale)


@dataclass(frozen=True)
class Settings:
    max_lipschitz: float | None = None
    method: str = "auto"
    device: str = "auto"
    input_shape: tuple[str, ...] = ()
    allow_incomplete: bool = False
    max_layer_factor: dict[str, float] = field(default_factory=dict)  # layer-name glob → limit
    in_memory_limit: int | None = None  # bytes; None: the pipeline's default
    workers: int | None = None  # None: no worker, the plain serial run
    ray: str | None = None  # None: not on Ray; "local" or an address
    input_range: InputRange | None = None  # --input-range strings, or the config's string, list or table
    around: Any = None  # --around [NAME=]FILE.npy strings, the config's string, list or table (API: arrays too)
    radius: float | None = None  # --radius: the ℓ∞ radius of the box around each --around centre
    lower_bound_time: float | None = None  # seconds; None: the pipeline's default
    recursion_time: float | None = None  # seconds; None: no time limit
    recursion_budget: float | str | None = None  # None: the pipeline's default; "inf": no limit
    bound: str = "recursion"
    max_branch_lipschitz: float | None = None
    rtol: float = 0.0  # the gate's relative tolerance: a bound passes up to limit·(1 + rtol)

    def layer_limit(self, layer_name: str) -> float | None:
        """The most specific matching glob wins: the one with the most literal characters."""
        matches = [
            (sum(ch not in "*?[]" for ch in pattern), limit)
            for pattern, limit in self.max_layer_factor.items()
            if fnmatch.fnmatchcase(layer_name, pattern)
        ]
        return max(matches, key=lambda match: match[0])[1] if matches else None

    def audit_options(self, **given_only_by_flags: Any) -> AuditOptions:
        """The options of one model's audit: these settings (those unset keep AuditOptions' defaults),
        with the ones only flags or keywords give (verify, lower_bound, seed, samples, steps)."""
        chosen: dict[str, Any] = dict(
            input_shape=self.input_shape, method=self.method, device=self.device, bound=self.bound
        )
        chosen["max_lipschitz"] = self.max_lipschitz
        for key in ("in_memory_limit", "lower_bound_time", "recursion_time", "input_range", "around", "radius"):
            if getattr(self, key) is not None:
                chosen[key] = getattr(self, key)
        if self.recursion_budget is not None:
            chosen["recursion_budget"] = None if self.recursion_budget == "inf" else self.recursion_budget
        return AuditOptions(**chosen, **given_only_by_flags)


def find_pyproject(start: Path) -> Path | None:
    for directory in [start, *start.parents]:
        candidate = directory / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def _normalise(table: dict[str, Any], where: str) -> dict[str, Any]:
    unknown = sorted(set(table) - KEYS)
    if unknown:
        raise UsageError(
            f"unknown key(s) {', '.join(unknown)} in {where}",
            hint=f'known keys: {", ".join(sorted(KEYS))}, and [tool.lipaudit.models."GLOB"]',
        )
    values = dict(table)
    try:
        for key in ("max_lipschitz", "max_branch_lipschitz"):
            if key in values:
                if isinstance(values[key], bool):
                    raise TypeError(f"{key} must be a number")
                values[key] = float(values[key])
                if math.isnan(values[key]):
                    raise ValueError(f"{key} must be a number, not nan")
        if "rtol" in values:
            values["rtol"] = check_rtol(values["rtol"])
        if "bound" in values:
            check_choice("bound", values["bound"])
        if "input_shape" in values:
            shapes = values["input_shape"]
            values["input_shape"] = (shapes,) if isinstance(shapes, str) else tuple(str(s) for s in shapes)
        if "allow_incomplete" in values and not isinstance(values["allow_incomplete"], bool):
            raise TypeError("allow_incomplete must be true or false")
        for key in ("method", "device"):
            if key in values and not isinstance(values[key], str):
                raise TypeError(f"{key} must be a string")
        if "in_memory_limit" in values:
            values["in_memory_limit"] = parse_size(values["in_memory_limit"])
        for key in ("lower_bound_time", "recursion_time"):
            if key in values:
                values[key] = parse_duration(values[key])
        if "recursion_budget" in values:
            budget = parse_budget(values["recursion_budget"])
            values["recursion_budget"] = "inf" if budget is None else budget
        if "input_range" in values:
            given = values["input_range"]
            if not isinstance(given, (str, list, dict)):
                raise TypeError('input_range must be "LO:HI", a list of "NAME=LO:HI" or a table of ranges')
            check_input_ranges(given)
            values["input_range"] = (
                (given,)
                if isinstance(given, str)
                else tuple(str(spec) for spec in given)
                if isinstance(given, list)
                else dict(given)
            )
        if "around" in values or "radius" in values:
            check_around(values.get("around"), values.get("radius"))
            if "radius" in values:
                values["radius"] = check_radius(values["radius"])
            if isinstance(values.get("around"), (str, list)):
                given = values["around"]
                values["around"] = (given,) if isinstance(given, str) else tuple(given)
        if "workers" in values:
            if isinstance(values["workers"], bool) or not isinstance(values["workers"], int) or values["workers"] < 1:
                raise TypeError("workers must be a whole number, at least 1")
        if "ray" in values:
            ray = values["ray"]
            if not isinstance(ray, (bool, str)):
                raise TypeError('ray must be true, false, "auto" or an address')
            values["ray"] = (LOCAL_RAY if ray is True else None) if isinstance(ray, bool) else ray.strip() or None
        if "max_layer_factor" in values:
            limits = values["max_layer_factor"]
            values["max_layer_factor"] = (
                {"*": float(limits)} if not isinstance(limits, dict) else {str(k): float(v) for k, v in limits.items()}
            )
    except (TypeError, ValueError) as error:
        raise UsageError(f"bad value in {where}: {error}") from None
    except UsageError as error:
        raise UsageError(f"bad value in {where}: {error}", hint=error.hint) from None
    return values


def load_settings(config_path: Path | None, model_path: Path | None = None) -> Settings:
    """Settings from ``[tool.lipaudit]`` of ``config_path`` (None: defaults), with model overrides."""
    settings = Settings()
    if config_path is None:
        return settings
    try:
        document = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise UsageError(f"cannot read {config_path}: {error}") from None
    table = dict(document.get("tool", {}).get("lipaudit", {}))
    overrides = table.pop("models", {})
    settings = replace(settings, **_normalise(table, f"[tool.lipaudit] of {config_path}"))
    if not isinstance(overrides, dict):
        raise UsageError(f"[tool.lipaudit.models] of {config_path} must be a table of globs")
    if model_path is not None:
        relative = _relative_to(model_path, config_path.parent)
        for pattern, override in overrides.items():
            run_wide = sorted(RUN_KEYS & set(override)) if isinstance(override, dict) else []
            if run_wide:
                raise UsageError(
                    f'{", ".join(run_wide)} in [tool.lipaudit.models."{pattern}"] of {config_path}: '
                    "these settings are for the whole run",
                    hint="set them in [tool.lipaudit]",
                )
            if fnmatch.fnmatch(relative, pattern) or fnmatch.fnmatch(model_path.name, pattern):
                where = f'[tool.lipaudit.models."{pattern}"] of {config_path}'
                settings = replace(settings, **_normalise(dict(override), where))
    return replace(settings, around=anchor_centres(settings.around, config_path.parent))


def _relative_to(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def merge_flags(settings: Settings, **flags: Any) -> Settings:
    """Flags given on the command line (not None) override the file."""
    given = {k: v for k, v in flags.items() if v is not None and k in {f.name for f in fields(Settings)}}
    if "input_shape" in given:
        given["input_shape"] = tuple(given["input_shape"]) or settings.input_shape
    return replace(settings, **given)


def layer_violations(layers: list[LayerReport], settings: Settings) -> list[LayerViolation]:
    """Layers whose factor exceeds their max_layer_factor (an unbounded layer always does)."""
    violations = []
    for layer in layers:
        limits = [settings.layer_limit(name) for name in (layer.name, *written_names(layer.notes))]
        found = [limit for limit in limits if limit is not None]
        if not found:
            continue
        limit = min(found)  # a layer renamed for a repeated name keeps the limits of the name written
        if layer.factor is None or not within(layer.factor, limit, settings.rtol):
            violations.append(LayerViolation(layer.name, layer.op, layer.factor, limit))
    return violations


def branch_violations(branches: list[ResidualBranch], settings: Settings) -> list[BranchViolation]:
    """Residual branches whose certified |c_g/c_x|·Lip(g) is not below max_branch_lipschitz."""
    limit = settings.max_branch_lipschitz
    if limit is None:
        return []
    return [
        BranchViolation(branch.add, branch.ratio, limit)
        for branch in branches
        if branch.ratio is None or not branch.ratio < limit
    ]
