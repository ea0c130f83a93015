"""One entry point for models: `load_model(profile)` loads the profile's weights (checkpoints.py finds or builds them)."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ragdistill.models.checkpoints import base_checkpoint, model_path  # model_path is also imported from here by notebook 04
from ragdistill.run.io import publish_dir, staging_dir
from ragdistill.models.profiles import Profile, get_profile


@dataclass
class LoadedModel:
    """A model, its tokenizer and how it was loaded."""

    model: torch.nn.Module
    tokenizer: object
    profile: Profile
    path: str
    quantized_4bit: bool
    load_seconds: float

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def native_bf16(cuda: bool | None = None) -> bool:
    """Whether the GPU computes bf16 natively (Ampere and later). torch's plain check also says yes on older cards
    (T4, Turing) that only emulate it, slowly: those get fp16."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    return cuda and torch.cuda.is_bf16_supported(including_emulation=False)


def wants_4bit(cuda: bool, forced: bool | None) -> bool:
    """4-bit NF4 by default on CUDA, off on CPU (bitsandbytes' CPU path is slow), unless forced either way."""
    return cuda if forced is None else forced


def compute_dtype(cuda: bool, bf16: bool | None = None, cpu: str = "float32") -> torch.dtype:
    """The dtype of 4-bit compute and of unquantized weights: bf16 on a GPU that has it, else fp16 on a GPU;
    on CPU the profile's `cpu_dtype` for plain weights (float32; bf16 for 4-bit compute, see bnb_config)."""
    if not cuda:
        return getattr(torch, cpu)
    return torch.bfloat16 if (native_bf16(cuda) if bf16 is None else bf16) else torch.float16


def bnb_config(dtype: torch.dtype | None = None, *, cuda: bool | None = None):
    """4-bit NF4 with double quantisation (QLoRA); bf16 compute where the hardware has it natively."""
    from trl import ModelConfig, get_quantization_config

    if dtype is None:
        cuda = torch.cuda.is_available() if cuda is None else cuda
        dtype = compute_dtype(True) if cuda else torch.bfloat16  # bitsandbytes' CPU kernels compute in bf16
    name = str(dtype).removeprefix("torch.")
    return get_quantization_config(
        ModelConfig(load_in_4bit=True, dtype=name, bnb_4bit_quant_type="nf4", use_bnb_nested_quant=True)
    )


def loading_kwargs(cuda: bool, use_4bit: bool, gpu: int = 0, compute_dtype_on_cpu: bool = False,
                   cpu_dtype: str = "float32") -> dict:
    """`from_pretrained` arguments for the device: 4-bit NF4 on one device (`gpu`, or the CPU), the weights that stay
    unquantized (embeddings, lm_head, norms) in the compute dtype on a GPU (on CPU too with `compute_dtype_on_cpu`,
    as training does); without 4-bit, the whole model in the device's dtype (on CPU the profile's `cpu_dtype`)."""
    if not use_4bit:
        return {"dtype": compute_dtype(cuda, cpu=cpu_dtype)}
    quantization = bnb_config(cuda=cuda)
    kwargs = {"quantization_config": quantization, "device_map": {"": gpu} if cuda else {"": "cpu"}}
    if cuda or compute_dtype_on_cpu:
        kwargs["dtype"] = quantization.bnb_4bit_compute_dtype
    else:  # float32, whatever the checkpoint holds: bitsandbytes quantizes no float64 weights (the smoke model's)
        kwargs["dtype"] = torch.float32
    return kwargs


def load_model(
    profile: str,
    *,
    load_4bit: bool | None = None,
    adapter: str | None = None,
    device: str | None = None,
    untrained: bool = False,
    adapters: dict[str, str] | None = None,
    env: str = "alfworld",
) -> LoadedModel:
    """Load the profile's model and tokenizer; 4-bit NF4 by default on CUDA, off on CPU unless forced.

    `adapter` loads one LoRA adapter folder, active; `adapters` ({name: folder}) loads several on the one base,
    to be switched per call (`TransformersBackend(adapter=name)`, "" for the base alone). Adapter weights stay
    in the compute dtype. `untrained=True` loads the model before its warm-start (`base_checkpoint`); `env` picks
    the warm-start of the `cpu` profile (one per benchmark).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    prof = get_profile(profile)
    start = time.perf_counter()
    path = base_checkpoint(prof) if untrained else model_path(prof, env)
    cuda = torch.cuda.is_available() and device != "cpu"
    use_4bit = wants_4bit(cuda, load_4bit)
    kwargs = loading_kwargs(cuda, use_4bit, cpu_dtype=prof.cpu_dtype)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"  # batched generation appends on the right
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if not use_4bit:
        model.to(device or ("cuda" if cuda else "cpu"))
    if adapter and adapters:
        raise ValueError("pass either adapter (one folder) or adapters ({name: folder}), not both")
    if adapter or adapters:
        model = attach_adapters(model, adapters or {"default": adapter})
    model.eval()
    return LoadedModel(model, tokenizer, prof, path, use_4bit, time.perf_counter() - start)


def weights_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype a model computes in: the 4-bit compute dtype of a quantized model, else its floating weights'."""
    quant = getattr(getattr(model, "config", None), "quantization_config", None)
    if quant is not None:
        quant = quant if isinstance(quant, dict) else quant.to_dict()
        name = str(quant.get("bnb_4bit_compute_dtype", "float32")).replace("torch.", "")
        return getattr(torch, name)
    return next(p.dtype for p in model.parameters() if p.is_floating_point())


def attach_adapters(model: torch.nn.Module, adapters: dict[str, str]):
    """A PEFT model with every adapter of `adapters` ({name: folder}) loaded on `model`, the first one active.

    PEFT upcasts adapter weights to float32 by default (what training wants); for inference they are kept in
    the model's compute dtype, so a bf16 base with r=64 adapters does not carry float32 copies of them.
    """
    from peft import PeftModel

    if not adapters:
        raise ValueError("attach_adapters needs at least one {name: folder}")
    dtype = weights_dtype(model)
    (first, folder), *rest = adapters.items()
    model = PeftModel.from_pretrained(model, folder, adapter_name=first, autocast_adapter_dtype=False)
    for name, folder in rest:
        model.load_adapter(folder, adapter_name=name, autocast_adapter_dtype=False)
    for name, param in model.named_parameters():
        if "lora_" in name and param.dtype != dtype:
            param.data = param.data.to(dtype)  # saved in float32 (or bf16 by TRL's QLoRA path): keep one dtype
    model.set_adapter(first)
    return model


def foldable(model: torch.nn.Module, adapter: str) -> bool:
    """Whether LoRA adapter `adapter` of a PEFT model can be folded into its base weights for a while
    (`folded_adapter`): every layer it adapts is a plain LoRA layer over float32 or float64 weights (not 4-bit, not
    bf16, where folding would round the sum)."""
    from peft.tuners.lora import LoraLayer

    layers = [m for m in model.modules() if isinstance(m, LoraLayer) and adapter in m.lora_A]
    return bool(layers) and all(
        m.get_base_layer().weight.dtype in (torch.float32, torch.float64) and not m.use_dora.get(adapter, False) for m in layers
    )


@contextlib.contextmanager
def folded_adapter(model: torch.nn.Module, adapter: str):
    """While open, the base weights of a PEFT model carry LoRA adapter `adapter` folded in (W + B A scale) and
    every adapter is off: the same function with no adapter matmuls per layer (on a CPU, a student prefills
    about 25% and decodes about 12% faster; bench/adapter_fold.py). The exact weights come back on exit.
    Only for a `foldable` adapter."""
    from peft.tuners.lora import LoraLayer

    if not foldable(model, adapter):
        raise ValueError(f"adapter {adapter!r} cannot be folded into this model's weights (see models.foldable)")
    saved = []
    try:
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, LoraLayer) and adapter in m.lora_A:
                    weight = m.get_base_layer().weight
                    saved.append((weight, weight.detach().clone()))
                    weight.add_(m.get_delta_weight(adapter).to(weight.dtype))
        with model.disable_adapter():
            yield model
    finally:
        with torch.no_grad():
            for weight, original in saved:
                weight.copy_(original)


def merged_checkpoint(profile: str, adapter: str | Path, folder: Path) -> Path:
    """The profile's model with a LoRA adapter merged into its weights, saved once as a plain checkpoint under
    `folder` (named after the adapter's content): for servers that load whole models only (`transformers serve`)."""
    import hashlib

    adapter = Path(adapter)
    digest = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        digest.update((adapter / name).read_bytes())
    dest = folder / f"{adapter.name}-{digest.hexdigest()[:12]}"
    if (dest / "config.json").is_file():
        return dest
    loaded = load_model(profile, load_4bit=False, adapter=str(adapter))
    model = loaded.model.merge_and_unload()
    tmp = staging_dir(dest)
    model.save_pretrained(tmp)
    loaded.tokenizer.save_pretrained(tmp)
    return publish_dir(tmp, dest)


def answer_chat(loaded: LoadedModel, messages: list[dict], max_new_tokens: int = 64) -> dict:
    """Greedy answer to one chat, with prompt length, new tokens and decoding speed."""
    tok = loaded.tokenizer
    enc = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    enc = {k: v.to(loaded.device) for k, v in enc.items()}
    start = time.perf_counter()
    with torch.no_grad():
        out = loaded.model.generate(
            **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id
        )
    seconds = time.perf_counter() - start
    new = out[0, enc["input_ids"].shape[1]:]
    return {
        "answer": tok.decode(new, skip_special_tokens=True).strip(),
        "prompt_tokens": int(enc["input_ids"].shape[1]),
        "new_tokens": int(new.shape[0]),
        "seconds": round(seconds, 3),
        "tokens_per_second": round(new.shape[0] / seconds, 1) if seconds > 0 else None,
    }
