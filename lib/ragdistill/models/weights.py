"""Which weights a stage ran on (model, quantization, compute dtype): recorded in each stage's metrics.json and
compared by stage 06, since a QLoRA student learnt to correct one base's quantization error and means nothing on
another base."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

# bitsandbytes 4-bit NF4, blocksize 64, double-quantized statistics: QLoRA's base (stage 05, `models.bnb_config`),
# and what vLLM's in-flight `--quantization bitsandbytes` makes of the same bf16 checkpoint (it calls
# `quantize_4bit(w, compress_statistics=True, quant_type="nf4")` per projection, as transformers does).
NF4 = "bnb-nf4-dq"
NONE = "none"
UNKNOWN = "unknown"  # a server this project did not start: nothing says what it serves

# The stages whose episodes or adapters stage 06's conditions descend from, in the order they ran.
SOURCE_STAGES = ("01_failures", "03_teacher", "05_student")


@dataclass(frozen=True)
class Weights:
    """The weights a model ran on: which checkpoint, how it was quantized, in which dtype it computed."""

    model: str  # a Hub id, or a local checkpoint folder
    quantization: str  # NF4, NONE, another method's name ("awq", "gptq"), or UNKNOWN
    dtype: str  # the compute dtype of 4-bit matmuls and of the unquantized weights ("bfloat16", "float32", "auto")
    revision: str = ""  # the Hub snapshot's commit, when it is known

    @property
    def label(self) -> str:
        """How an episode names its model: the checkpoint, and its quantization when it has one."""
        return self.model if self.quantization == NONE else f"{self.model} ({self.quantization})"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Weights":
        return cls(**{k: d.get(k, "") for k in ("model", "quantization", "dtype", "revision")})

    def differs(self, other: "Weights") -> str | None:
        """Why two runs did not play on the same weights, or None when they did. The dtype of the unquantized
        parts is not compared: it is a property of the card (bf16 or fp16), not of the checkpoint."""
        if UNKNOWN in (self.quantization, other.quantization):
            return (f"cannot tell whether {self.label} and {other.label} are the same weights "
                    "(a server this project did not start says nothing of its quantization)")
        if self.model != other.model:
            return f"different checkpoints: {self.model} and {other.model}"
        if self.quantization != other.quantization:
            return f"{self.model} quantized differently: {self.quantization} and {other.quantization}"
        if self.revision and other.revision and self.revision != other.revision:
            return f"different revisions of {self.model}: {self.revision[:12]} and {other.revision[:12]}"
        return None


def hub_revision(model: str) -> str:
    """The commit of the Hub snapshot in the local cache for `model` ("" for a folder, or when none is cached)."""
    if Path(model).exists():
        return ""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model, "config.json")
    except Exception:  # noqa: BLE001 - a malformed id or cache: the revision is simply not known
        return ""
    return Path(found).parent.name if isinstance(found, str) else ""


def quantization_of(config) -> str:
    """The quantization a transformers model config records (NONE without one)."""
    quant = getattr(config, "quantization_config", None)
    if quant is None:
        return NONE
    quant = quant if isinstance(quant, dict) else quant.to_dict()
    if quant.get("load_in_4bit"):
        kind = f"bnb-{quant.get('bnb_4bit_quant_type', 'fp4')}"
        return kind + ("-dq" if quant.get("bnb_4bit_use_double_quant") else "")
    if quant.get("load_in_8bit"):
        return "bnb-int8"
    return str(quant.get("quant_method", UNKNOWN)).lower()


def of_model(model, source: str) -> Weights:
    """The weights of a model loaded in this process from `source` (a Hub id or a folder)."""
    from ragdistill.models.loading import weights_dtype

    dtype = str(weights_dtype(model)).removeprefix("torch.")
    return Weights(str(source), quantization_of(getattr(model, "config", None)), dtype, hub_revision(str(source)))


def _arg(args: list[str], flag: str) -> str:
    """The value after `flag` (or in `flag=value`) in a command line; "" when absent."""
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return ""


def of_server(engine: str, model: str, args: list[str], revision: str = "") -> Weights:
    """The weights a server this project starts serves: `model` (the name requests use) with its command line."""
    if engine != "vllm":  # transformers serve loads whole checkpoints, unquantized
        return Weights(model, NONE, "auto", revision)
    quant = _arg(args, "--quantization")
    if quant == "bitsandbytes":
        quant = NF4  # in flight from a bf16 checkpoint: NF4 with double-quantized statistics (see NF4)
    elif not quant:
        upper = model.upper()
        quant = next((q.lower() for q in ("AWQ", "GPTQ", "FP8") if q in upper), NONE)
    return Weights(model, quant, _arg(args, "--dtype") or "auto", revision)


def external(model: str) -> Weights:
    """A server at base_url: the model name is known, the weights behind it are not."""
    return Weights(model, UNKNOWN, UNKNOWN)


def recorded(stage_dir: Path) -> Weights | None:
    """The weights a finished stage recorded in its metrics.json (None: not recorded)."""
    path = Path(stage_dir) / "metrics.json"
    if not path.is_file():
        return None
    found = json.loads(path.read_text()).get("weights")
    return Weights.from_dict(found) if isinstance(found, dict) else None


class MixedWeightsError(RuntimeError):
    """Stage 06 would compare conditions that ran on different weights."""


def mismatches(run_dir: Path, current: Weights, stages: tuple[str, ...] = SOURCE_STAGES) -> dict[str, str]:
    """Per earlier stage of the run, why its recorded weights differ from `current` (stages that agree, or that
    recorded none, are left out)."""
    out = {}
    for stage in stages:
        earlier = recorded(Path(run_dir) / stage)
        why = earlier.differs(current) if earlier else None
        if why:
            out[stage] = why
    return out


def refuse_mixed(run_dir: Path, current: Weights, allow: bool, say=print) -> dict[str, str]:
    """Stop stage 06 when an earlier stage ran on other weights than `current` (the students' adapters would be
    played on a base they were not trained on, or the teacher compared with another model), unless `allow`; then
    say so and go on. Returns the differences found."""
    found = mismatches(run_dir, current)
    if not found:
        return found
    lines = "\n".join(f"  {stage}: {why}" for stage, why in found.items())
    if not allow:
        raise MixedWeightsError(
            f"This stage plays on {current.label}, but earlier stages of the run did not:\n{lines}\n"
            "A QLoRA adapter learns to correct the error of the 4-bit base it was trained on, and the teacher's "
            "episodes are the student's data: comparing the conditions across different weights measures the "
            "weights, not the method. Play every stage on one base (the profile's default), or set "
            "mixed_weights=True to compare them anyway.")
    say(f"mixed_weights=True: comparing conditions across different weights:\n{lines}")
    return found
