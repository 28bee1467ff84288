"""The capacity model in Python: does a model fit its memory limit (CPU) or its GPUs?

The coefficients live in overlays-catalog/capacity.yml and each model's figures in models.yml (`capacity`,
written onto the InferenceService as the model-serving.io/capacity annotation). jinja/capacity.jinja applies
the same arithmetic at copy time; lint rule `capacity` applies this one to the built output. Integer MiB with
the same rounding on both sides, so tests/test_capacity.py can demand identical numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_UP, Decimal, DecimalException
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from .tools import PROJECT_ROOT, is_checkout

MIB = 1 << 20
# The forms quantity_mib accepts for a model's memory and disk (quantity() reads apimachinery's full grammar).
QUANTITY = re.compile(r"^([0-9]+(?:[.][0-9]+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
ANNOTATION = "model-serving.io/capacity"
FIGURES = ("parameters", "layers", "kvHeads", "headDim", "bytesPerWeight", "downloadBytes")


@cache
def coefficients() -> dict[str, Any]:
    # The checkout's catalog, or the copy packaged with servingops (installed from git: `make tools` in a generated repo).
    folder = PROJECT_ROOT / "overlays-catalog" if is_checkout() else Path(__file__).resolve().parent / "catalog"
    return yaml.safe_load((folder / "capacity.yml").read_text())


def quantity_mib(value: Any) -> int:
    """A Kubernetes quantity in whole MiB (rounded down); -1 when it is not one."""
    match = QUANTITY.match(str(value)) if value is not None else None
    if not match:
        return -1
    return int(quantity(match.group(0)) // MIB)


# The full Kubernetes quantity grammar (apimachinery's resource.Quantity): a decimal number with a binary or
# decimal SI suffix or an exponent. "1E" is an exabyte; "1e3" is a thousand.
K8S_QUANTITY = re.compile(r"^([+-]?(?:[0-9]+(?:[.][0-9]*)?|[.][0-9]+))(?:([eE][+-]?[0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]))?$")
NANO = Decimal("1e-9")
K8S_SUFFIXES = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "k": Decimal(10**3),
                "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12), "P": Decimal(10**15),
                "E": Decimal(10**18), **{s: Decimal(1 << (10 * (n + 1))) for n, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))}}


def quantity(value: Any) -> Decimal | None:
    """The exact amount a Kubernetes quantity stands for ("1000m" and "1" are equal; so are "1Gi" and "1024Mi"),
    None when it is not one. The API server and KServe rewrite quantities into canonical form, so compare these."""
    match = K8S_QUANTITY.match(str(value).strip()) if isinstance(value, (str, int, float)) else None
    if not match:
        return None
    number, exponent, suffix = match.groups()
    try:
        amount = Decimal(number) * (Decimal(10) ** int(exponent[1:]) if exponent else K8S_SUFFIXES.get(suffix, Decimal(1)))
        # apimachinery keeps nano precision, rounding up: 0.1n is stored as 1n
        return amount.quantize(NANO, rounding=ROUND_UP) if amount.as_tuple().exponent < -9 else amount
    except DecimalException:  # beyond what a Quantity holds (1e1000000)
        return None


@dataclass(frozen=True)
class Settings:
    """What a model runs with. ctx: llama.cpp --ctx-size, Ollama context length, vLLM --max-model-len."""

    runtime: str
    gpus: int
    tp: int
    memory_mib: int
    gpu_mib: int  # 0: GPU product unknown, GPU checks skipped
    ctx: int
    cache_ram: int = 0
    parallel: int = 1
    utilization: float = 1.0


def need(figures: dict, s: Settings) -> dict[str, Any]:
    """{need, have, limit: memory | gpu, parts: [[what, MiB]]}; need 0 when it cannot be checked."""
    c = coefficients()
    per_token = c["kv_tensors"] * figures["layers"] * figures["kvHeads"] * figures["headDim"] * c["kv_bytes_per_element"]
    weights = (int(figures["parameters"] * figures["bytesPerWeight"]) + MIB - 1) // MIB
    overhead = c["overhead_mib"][s.runtime]
    if s.runtime == "llamacpp":
        kv = (per_token * s.ctx + MIB - 1) // MIB
        return {"need": weights + kv + s.cache_ram + overhead, "have": s.memory_mib, "limit": "memory",
                "parts": [["weights", weights], [f"KV cache for --ctx-size {s.ctx}", kv], ["--cache-ram", s.cache_ram],
                          ["overhead", overhead]]}
    if s.runtime == "ollama":
        kv = (per_token * s.ctx * s.parallel + MIB - 1) // MIB
        what = f"KV cache for {s.ctx} x {s.parallel} tokens"
        if s.gpus == 0:
            return {"need": weights + kv + overhead, "have": s.memory_mib, "limit": "memory",
                    "parts": [["weights", weights], [what, kv], ["overhead", overhead]]}
        return {"need": (weights + kv + s.gpus - 1) // s.gpus + overhead if s.gpu_mib else 0, "have": s.gpu_mib,
                "limit": "gpu", "parts": [["weights", weights], [what, kv], ["GPUs", s.gpus], ["overhead per GPU", overhead]]}
    kv = (per_token * s.ctx + MIB - 1) // MIB
    return {"need": (weights + kv + s.tp - 1) // s.tp + overhead if s.gpu_mib else 0,
            "have": int(s.gpu_mib * s.utilization), "limit": "gpu",
            "parts": [["weights", weights], [f"KV cache for --max-model-len {s.ctx}", kv], ["tensor parallel", s.tp],
                      ["overhead per GPU", overhead]]}


def summary(result: dict) -> str:
    return " + ".join(f"{mib} MiB {what}" for what, mib in result["parts"])


def ephemeral_gi(figures: dict) -> int:
    """Whole GiB of ephemeral-storage for a model's download (the same rounding as the template)."""
    headroom = coefficients()["download_headroom_percent"]
    return (figures["downloadBytes"] * (100 + headroom) // 100 + (1 << 30) - 1) // (1 << 30)
