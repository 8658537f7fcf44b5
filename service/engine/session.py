"""onnxruntime sessions with provider fallback and graph clean-up at load.

Two repairs happen here, in memory, so model files stay byte-identical to their
published (sha256-checked) form:

* graph inputs that no node consumes are dropped (OpenCV Zoo SFace lists 29 of
  them and onnxruntime would demand feeds for each);
* a batch dimension fixed to 1 is made symbolic, so fixed-batch exports still run
  micro-batches; whether that worked is checked with a real 2-sample run, and the
  session falls back to one run per sample when it does not.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from service.errors import ModelLoadError

log = logging.getLogger("facegate.engine")

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8}


_WARNED: set[tuple[str, ...]] = set()


#: What ``auto`` tries, fastest first.
AUTO_PROVIDERS = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def choose_providers(preferred: list[str], available: list[str] | None = None) -> list[str]:
    """Preferred providers that this onnxruntime build has, in order, always ending with CPU.

    ``["auto"]`` (the default) takes the fastest the build has without complaint; a
    provider an operator named explicitly and that is missing earns a warning, since
    that operator expects a GPU.
    """
    available = ort.get_available_providers() if available is None else available
    if preferred == ["auto"]:
        chosen = [p for p in AUTO_PROVIDERS if p in available]
        log.info("execution providers (auto): %s", ", ".join(chosen))
        return chosen if "CPUExecutionProvider" in chosen else [*chosen, "CPUExecutionProvider"]
    chosen = [p for p in preferred if p in available]
    missing = [p for p in preferred if p not in available]
    if missing and tuple(missing) not in _WARNED:
        _WARNED.add(tuple(missing))  # once per process, not once per model
        log.warning("execution providers requested but not available in this onnxruntime build, falling back: "
                    "%s (running on %s)", ", ".join(missing), ", ".join(p for p in preferred if p in available)
                    or "CPUExecutionProvider")
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def clean_graph(model: onnx.ModelProto, make_batch_symbolic: bool) -> tuple[onnx.ModelProto, bool]:
    """Drop unconsumed graph inputs and inputs that are really initializers (old exporters list
    weights as inputs, which blocks constant folding); optionally free a batch dim fixed to 1.
    Returns (model, changed_batch)."""
    graph = model.graph
    consumed = {name for node in graph.node for name in node.input}
    initializers = {init.name for init in graph.initializer}
    keep = [i for i in graph.input if i.name in consumed and i.name not in initializers]
    if len(keep) != len(graph.input):
        del graph.input[:]
        graph.input.extend(keep)
    changed = False
    if make_batch_symbolic:
        real_inputs = [i for i in graph.input if i.name not in initializers]
        for vi in list(real_inputs) + list(graph.output):
            dims = vi.type.tensor_type.shape.dim
            if dims and dims[0].HasField("dim_value") and dims[0].dim_value == 1:
                dims[0].dim_param = "batch"
                changed = True
        if changed:
            # Stale intermediate shapes would pin batch=1 again; let the runtime infer them.
            del graph.value_info[:]
    return model, changed


@dataclass
class LoadedSession:
    session: ort.InferenceSession
    input_name: str
    input_shape: list
    input_dtype: type
    output_names: list[str]
    providers: list[str]
    batch_mode: str  # "dynamic" | "symbolic" | "single"


def load_session(
    path: Path,
    providers: list[str],
    *,
    intra_op_threads: int = 0,
    input_name: str | None = None,
    want_batch: bool = True,
) -> LoadedSession:
    """Load an ONNX file into a session on the best available provider.

    Never crashes because an accelerator is missing: a provider that fails to
    initialise is dropped with a warning and the next one is tried.
    """
    try:
        model = onnx.load(str(path))
    except Exception as e:
        raise ModelLoadError(f"cannot parse ONNX model {path}: {e}", path=str(path)) from e
    first = next((i for i in model.graph.input if i.name not in {x.name for x in model.graph.initializer}), None)
    dims = first.type.tensor_type.shape.dim if first is not None else []
    fixed_one = bool(dims) and dims[0].HasField("dim_value") and dims[0].dim_value == 1
    model, changed = clean_graph(model, make_batch_symbolic=want_batch and fixed_one)
    batch_mode = "symbolic" if changed else ("single" if fixed_one else "dynamic")

    opts = ort.SessionOptions()
    if intra_op_threads:
        opts.intra_op_num_threads = intra_op_threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    # The CPU arena keeps the high-water mark of every batch shape it has seen: with micro-batches
    # of 1..32 crops the recognizer's RSS grew by ~430 MB over a few minutes of load (bench/load.py).
    # Without it, buffers go back to the allocator after each run; throughput is unchanged on CPU.
    opts.enable_cpu_mem_arena = False

    def make(model_bytes: bytes) -> ort.InferenceSession:
        chain = choose_providers(providers)
        while True:
            try:
                sess = ort.InferenceSession(model_bytes, sess_options=opts, providers=chain)
                break
            except Exception as e:
                if len(chain) == 1:
                    raise ModelLoadError(f"onnxruntime cannot load {path}: {e}", path=str(path)) from e
                log.warning("provider %s failed for %s (%s); falling back", chain[0], path.name, e)
                chain = chain[1:]
        active = sess.get_providers()
        if active and active[0] != chain[0]:
            log.warning("requested %s for %s, onnxruntime runs it on %s", chain[0], path.name, active[0])
        return sess

    sess = make(model.SerializeToString())
    inp = next((i for i in sess.get_inputs() if i.name == input_name), None) if input_name else sess.get_inputs()[0]
    if inp is None:
        raise ModelLoadError(f"{path} has no input named {input_name!r}", path=str(path))
    dtype = _ORT_TYPES.get(inp.type, np.float32)

    if batch_mode == "symbolic" and len(inp.shape) == 4 and all(isinstance(d, int) for d in inp.shape[1:]):
        # Prove the freed batch dimension really works before trusting it.
        probe = np.random.default_rng(0).random((2, *inp.shape[1:])).astype(dtype)
        try:
            two = sess.run(None, {inp.name: probe})[0]
            one = np.concatenate([sess.run(None, {inp.name: probe[i : i + 1]})[0] for i in range(2)])
            ok = two.shape[0] == 2 and np.allclose(two, one, atol=1e-3, rtol=1e-3)
        except Exception:  # noqa: BLE001 - a graph with a hard-coded batch fails here
            ok = False
        if not ok:
            log.warning("%s: batch dimension cannot be freed; running one sample per call", path.name)
            model = onnx.load(str(path))
            model, _ = clean_graph(model, make_batch_symbolic=False)
            sess = make(model.SerializeToString())
            batch_mode = "single"
    log.info("loaded %s on %s (batch: %s)", path.name, sess.get_providers()[0], batch_mode)
    return LoadedSession(
        session=sess,
        input_name=inp.name,
        input_shape=list(inp.shape),
        input_dtype=dtype,
        output_names=[o.name for o in sess.get_outputs()],
        providers=sess.get_providers(),
        batch_mode=batch_mode,
    )
