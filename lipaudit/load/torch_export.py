"""torch.export archives (``torch.export.save``, ``.pt2``) → IR.

``torch.export.load`` gives an ExportedProgram whose graph holds aten ops only. Parameters,
buffers and lifted constants enter as placeholders that the graph signature maps to module paths
(``layer1.0.conv1.weight``); the layer names come from each node's ``nn_module_stack``. The graph is
run once on the probe input through the same builder as TorchScript, so an ``--input-shape``
other than the exported one (for a program exported with dynamic shapes) gets its own shapes.
"""

from __future__ import annotations

import io
import operator
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelLoadError
from ..ir import Graph
from ..shapes import resolve_input_shapes
from . import aten_composites  # noqa: F401 (its converters join CONVERTERS)
from .aten_ops import CONVERTERS
from .naming import layer_name
from .probe import RuntimeProbe
from .torch_files import quiet_torch
from .torch_graph import TorchGraphBuilder, Tracked, first_line, flatten


def _declared(node: torch.fx.Node) -> list[int | str | None]:
    value = node.meta.get("val")
    if not isinstance(value, torch.Tensor):
        raise ModelLoadError(
            f"input '{node.name}' of the exported program is not a tensor",
            hint="export a wrapper whose forward takes tensors only",
        )
    return [int(d) if isinstance(d, int) else str(d) for d in value.shape]


def _node_name(node: torch.fx.Node, short: str) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    path, module_type = list(stack.values())[-1] if stack else ("", "")
    return layer_name(str(path), str(module_type), short)


def _load_program(data: bytes, path: Path) -> torch.export.ExportedProgram:
    try:
        return torch.export.load(io.BytesIO(data))
    except Exception as error:  # the archive reader raises RuntimeError, KeyError, ValueError…
        raise ModelLoadError(
            f"{path} is not a readable torch.export archive ({first_line(error)})",
            hint="save it again with torch.export.save",
        ) from error


def _lifted_tensors(program: torch.export.ExportedProgram) -> dict[str, tuple[str, torch.Tensor]]:
    """Placeholder name → (module path, tensor) for parameters, buffers and lifted constants."""
    signature = program.graph_signature
    tensors: dict[str, tuple[str, torch.Tensor]] = {}
    for mapping in (
        signature.inputs_to_parameters,
        signature.inputs_to_buffers,
        signature.inputs_to_lifted_tensor_constants,
    ):
        for placeholder, target in mapping.items():
            tensor = program.state_dict.get(target, program.constants.get(target))
            if not isinstance(tensor, torch.Tensor):
                raise ModelLoadError(f"the exported program has no tensor for '{target}'")
            tensors[placeholder] = (target, tensor)
    return tensors


def _call(builder: TorchGraphBuilder, node: torch.fx.Node, env: dict[torch.fx.Node, Any]) -> Any:
    target = node.target
    args: Any = torch.fx.node.map_arg(node.args, env.__getitem__)  # fx arguments: any nesting of values
    kwargs = torch.fx.node.map_arg(node.kwargs, env.__getitem__)
    if target is operator.getitem:
        return args[0][args[1]]
    if (
        callable(target)
        and _is_scalar_arithmetic(target)
        and not any(isinstance(a, Tracked) for a in flatten([args, kwargs]))
    ):
        # size arithmetic and the range checks export adds (u0 >= 0): Python numbers only; a number
        # read from the data was already recorded where it was read (TorchGraphBuilder.data_reads)
        return target(*args, **kwargs)
    if not isinstance(target, torch._ops.OpOverload):
        raise ModelLoadError(
            f"{target} in the exported program is not supported",
            hint="export a model without control-flow operators (torch.cond, while_loop)",
        )
    short = target._opname
    mutates = short.endswith("_") and not short.startswith("_")
    op = target
    if mutates:
        try:
            op = getattr(getattr(getattr(torch.ops, target.namespace), short[:-1]), target._overloadname)
        except (AttributeError, RuntimeError) as error:
            raise ModelLoadError(
                f"in-place {target.name()} in the exported program has no out-of-place form",
                hint="export the model without this in-place op",
            ) from error
    result = builder.call(
        op,
        op._schema,
        list(args),
        dict(kwargs),
        node_name=_node_name(node, op._opname),
        value_names=[node.name],
        mutates=mutates,
    )
    if mutates and isinstance(node.args[0], torch.fx.Node) and isinstance(env[node.args[0]], Tracked):
        env[node.args[0]] = result
    return result


def _is_scalar_arithmetic(target: Any) -> bool:
    """operator.ge, operator.mul, math.ceil, torch.sym_max, …: functions of Python numbers."""
    module = getattr(target, "__module__", None) or ""
    return (
        target in vars(operator).values()
        or module in ("math", "_operator")
        or (getattr(target, "__name__", "").startswith("sym_") and module.startswith("torch"))
    )


def load_torch_export(
    data: bytes, path: Path, input_shapes: dict[str, tuple[int, ...]], seed: int = 0
) -> tuple[Graph, Any, RuntimeProbe]:
    """The IR, and the program's module (``ExportedProgram.module()``) it was read from."""
    with quiet_torch():
        program = _load_program(data, path)
        lifted = _lifted_tensors(program)
        user_inputs = [n for n in program.graph.nodes if n.op == "placeholder" and n.name not in lifted]
        shapes = resolve_input_shapes({n.name: _declared(n) for n in user_inputs}, input_shapes)
        builder = TorchGraphBuilder(CONVERTERS, seed)
        env: dict[torch.fx.Node, Any] = {}
        outputs: list[Any] = []
        with torch.no_grad():
            for node in program.graph.nodes:
                if node.op == "placeholder":
                    if node.name in lifted:
                        target, tensor = lifted[node.name]
                        env[node] = builder.constant(tensor, target, owner=target.rpartition(".")[0])
                    else:
                        env[node] = builder.input(node.name, shapes[node.name], node.meta["val"].dtype)
                elif node.op == "call_function":
                    env[node] = _call(builder, node, env)
                elif node.op == "output":
                    values = torch.fx.node.map_arg(node.args[0], env.__getitem__)
                    specs = program.graph_signature.output_specs
                    outputs = [
                        value
                        for value, spec in zip(flatten(values), specs)
                        if spec.kind == torch.export.graph_signature.OutputKind.USER_OUTPUT
                    ]
                else:
                    raise ModelLoadError(f"{node.op} node '{node.name}' in the exported program is not supported")
        graph = builder.finish(outputs, "torch.export", {"producer": f"torch {torch.__version__} (torch.export)"})
        module = program.module()
        return graph, module, builder.probe(module)
