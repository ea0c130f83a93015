import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ragdistill.run.config import ConfigError
from ragdistill.run.io import write_jsonl
from ragdistill.method.student.train import (
    QWEN25_DEFAULT_SYSTEM,
    GpuOutOfMemory,
    StudentConfig,
    StudentTrainingError,
    guard_oom,
    load_tokenizer,
    marked_template,
    parse_args,
    prepare_data,
    show_loss_mask,
    skip_reason,
    train_adapter,
    train_student,
)

# Small and fast: a few steps at a learning rate the tiny smoke model notices.
FAST = {"profile": "smoke", "effective_batch": 2, "learning_rate": 5e-3, "max_steps": 4, "save_steps": 100}


@pytest.fixture(scope="module")
def episodes(alfworld_root):
    """Real ALFWorld walkthroughs (one searching visit first) of training-pool games the smoke model never saw."""
    from ragdistill.benchmarks.alfworld.env import balanced_sample, training_pool
    from ragdistill.run.paths import cache_dir
    from ragdistill.miniature.walkthroughs import cached_replays

    games = balanced_sample(training_pool(), 4, seed=11)
    return cached_replays(games, cache_dir() / "walkthroughs" / "pool-tests-detours1.jsonl", detours=1)


def dehint_rows(episodes, source: str) -> list[dict]:
    """Stage 04's line format: hint-free chats in both agents' formats, ending on the last answer."""
    from ragdistill.miniature.curriculum import demo_chat

    rows = []
    for record in episodes:
        for agent in ("react", "stateact"):
            messages = demo_chat(record, agent)
            rows.append({
                "id": f"{source}-{record['game_id']}-{agent}", "game_id": record["game_id"],
                "task_type": record["task_type"], "agent": agent, "source": source,
                "messages": messages, "n_tokens": sum(len(m["content"]) // 4 for m in messages),
            })
    return rows


def write_dehint(outputs: Path, run: str, distilled: list[dict], sft: list[dict]) -> Path:
    folder = outputs / "runs" / run / "04_dehint"
    write_jsonl(folder / "distilled.jsonl", distilled)
    write_jsonl(folder / "sft.jsonl", sft)
    return folder


@pytest.fixture()
def run04(outputs, episodes):
    """A run folder whose 04_dehint holds 4 distilled and 4 sft chats."""
    write_dehint(outputs, "t", dehint_rows(episodes[:2], "distilled"), dehint_rows(episodes[2:], "sft"))
    return "t"


def test_config_checks_and_resolves():
    cfg = StudentConfig.from_params({"profile": "gpu-7b"})
    assert (cfg.rank, cfg.alpha) == (64, 128) and cfg.learning_rate == 2e-4 and cfg.warmup_ratio == 0.1
    assert cfg.effective_batch == 8 and cfg.epochs == 1 and cfg.lr_scheduler == "linear"
    assert cfg.grad_accumulation(processes=1) == 8 and cfg.grad_accumulation(processes=2) == 4
    assert StudentConfig.from_params({"profile": "smoke"}).rank == 8
    with pytest.raises(ConfigError, match="adapters"):
        StudentConfig.from_params({"adapters": ["distilled", "teacher"]})
    with pytest.raises(ConfigError, match="overlong"):
        StudentConfig.from_params({"overlong": "truncate"})
    with pytest.raises(ConfigError, match="lr_scheduler='linaer'"):
        StudentConfig.from_params({"lr_scheduler": "linaer"})
    with pytest.raises(ConfigError, match="multiple of per_device_batch"):
        StudentConfig.from_params({"per_device_batch": 3})
    cli = parse_args(["--run", "123", "--adapters", "sft", "--load-4bit", "false", "--max-steps", "3", "--learning-rate", "1e-3"])
    assert (cli.run, cli.adapters, cli.load_4bit, cli.max_steps, cli.learning_rate) == ("123", ["sft"], False, 3, 1e-3)
    assert parse_args([]).load_4bit is None and parse_args([]).max_length is None  # unset: the device's and stage 04's


def test_device_rules_with_the_device_as_an_input():
    """On a GPU: 4-bit base, gradient checkpointing, paged 8-bit AdamW; on CPU none of them; explicit values win."""
    cfg = StudentConfig.from_params({"profile": "gpu-7b"})
    gpu = (cfg.use_4bit_on(True), cfg.gradient_checkpointing_on(True), cfg.optimizer_on(True))
    cpu = (cfg.use_4bit_on(False), cfg.gradient_checkpointing_on(False), cfg.optimizer_on(False))
    assert gpu == (True, True, "paged_adamw_8bit") and cpu == (False, False, "adamw_torch")
    forced = StudentConfig.from_params({"load_4bit": True, "gradient_checkpointing": False, "optim": "adamw_torch"})
    assert (forced.use_4bit_on(False), forced.gradient_checkpointing_on(True), forced.optimizer_on(True)) == (True, False, "adamw_torch")
    with pytest.raises(ConfigError, match="optim='adamw_9bit'"):
        StudentConfig.from_params({"optim": "adamw_9bit"})


def test_stage_04_and_05_share_one_length_limit(outputs):
    from ragdistill.run.config import MAX_EXAMPLE_TOKENS, DehintConfig

    assert DehintConfig().max_length == MAX_EXAMPLE_TOKENS >= 4096  # a 50-step StateAct episode is about 4k tokens
    assert StudentConfig.from_params({"run": "lim"}).length_limit == MAX_EXAMPLE_TOKENS
    DehintConfig.from_params({"run": "lim", "max_length": 3000}).save()  # stage 04 ran with another limit
    assert StudentConfig.from_params({"run": "lim"}).length_limit == 3000
    assert StudentConfig.from_params({"run": "lim", "max_length": 5000}).length_limit == 5000  # unless told otherwise


def test_marked_template_renders_like_qwen25_stock_template(smoke_model):
    """The gpu profiles' Qwen2.5 template has no generation markers; the project's marked ChatML renders alike."""
    import copy

    from trl.chat_template_utils import qwen2_5_chat_template

    from ragdistill.models.chat_template import chatml_template

    tok = copy.deepcopy(smoke_model.tokenizer)
    tok.chat_template = qwen2_5_chat_template  # TRL ships Qwen2.5-Instruct's stock template verbatim
    chat = [
        {"role": "system", "content": "You are an agent in a household text game."},
        {"role": "user", "content": "You are in the middle of a room.\n\nYour task is to: put a mug in desk."},
        {"role": "assistant", "content": "think: a mug may be on the desk\naction: go to desk 1"},
        {"role": "user", "content": "You arrive at desk 1. On the desk 1, you see a mug 1."},
        {"role": "assistant", "content": "action: take mug 1 from desk 1"},
    ]
    marked = chatml_template(QWEN25_DEFAULT_SYSTEM)
    for messages in (chat, chat[1:], chat[:2]):
        for gen in (False, True):
            stock = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
            assert tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen, chat_template=marked) == stock
    assert marked_template(tok, "gpu-7b") == marked
    with pytest.raises(StudentTrainingError, match="no marked equivalent"):
        marked_template(tok, "cpu")  # an unmarked template that is not Qwen2.5's
    assert marked_template(smoke_model.tokenizer, "smoke") == smoke_model.tokenizer.chat_template


def test_assistant_mask_covers_exactly_the_assistant_turns(smoke_model, outputs, run04):
    from datasets import Dataset
    from trl import SFTTrainer

    from ragdistill.method.student.train import load_base, sft_config

    cfg = StudentConfig.from_params({**FAST, "run": run04})
    tok = load_tokenizer(cfg)
    data = prepare_data(cfg, tok, "distilled")
    for record, ids, mask in zip(data.records, data.ids, data.masks):
        answers = [m["content"] for m in record["messages"] if m["role"] == "assistant"]
        assert tok.decode([t for t, m in zip(ids, mask) if m]) == "".join(a + "<|im_end|>" for a in answers)
        assert tok.decode(ids) == tok.apply_chat_template(record["messages"], tokenize=False)
    shown = show_loss_mask(tok, data.records[0]["messages"], width=10**6)
    assert shown.count("⟦") == sum(m["role"] == "assistant" for m in data.records[0]["messages"])
    # TRL's own labels carry loss on the same tokens as our mask.
    trainer = SFTTrainer(
        model=load_base(cfg), args=sft_config(cfg, "distilled", data.max_length),
        train_dataset=Dataset.from_list([{"messages": r["messages"]} for r in data.records]), processing_class=tok,
    )
    for row, ids, mask in zip(trainer.train_dataset, data.ids, data.masks):
        assert row["input_ids"] == ids
        assert row["labels"] == [t if m else -100 for t, m in zip(ids, mask)]


def test_overlong_examples_are_counted_and_dropped_or_kept_whole(smoke_model, outputs, run04):
    cfg = StudentConfig.from_params({**FAST, "run": run04})
    tok = load_tokenizer(cfg)
    lengths = sorted(len(ids) for ids in prepare_data(cfg, tok, "distilled").ids)
    limit = lengths[1]  # two examples fit, two are longer
    n_long = sum(n > limit for n in lengths)
    dropped = prepare_data(StudentConfig.from_params({**FAST, "run": run04, "max_length": limit}), tok, "distilled")
    assert (dropped.overlong, dropped.dropped, len(dropped.records)) == (n_long, n_long, len(lengths) - n_long)
    assert all(len(ids) <= limit for ids in dropped.ids) and dropped.max_length == limit
    kept = prepare_data(StudentConfig.from_params({**FAST, "run": run04, "max_length": limit, "overlong": "keep"}), tok, "distilled")
    assert (kept.overlong, kept.dropped, len(kept.records)) == (n_long, 0, len(lengths))
    assert kept.max_length == lengths[-1] and sorted(map(len, kept.ids)) == lengths  # whole, not truncated
    none_fit = StudentConfig.from_params({**FAST, "run": run04, "max_length": lengths[0] - 1})
    reason = skip_reason(none_fit, prepare_data(none_fit, tok, "distilled"))
    assert "longer than max_length" in reason and "overlong='keep'" in reason


@pytest.mark.slow
def test_training_lowers_the_loss_and_saves_a_loadable_adapter(smoke_model, outputs, run04):
    from ragdistill.models.loading import answer_chat, load_model

    cfg = StudentConfig.from_params({**FAST, "run": run04, "max_steps": 6})
    cfg.save()
    metrics = train_student(cfg)
    assert metrics["trained"] == ["distilled", "sft"] and not metrics["skipped"]
    assert json.loads((cfg.stage_dir / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    for name, result in metrics["adapters"].items():
        assert result["steps"] == 6 and result["examples"] == 4 and result["dropped"] == 0
        assert result["loss_after"] < 0.7 * result["loss_before"], result
        assert result["tokens_per_second"] > 0 and result["seconds"] > 0 and result["peak_gpu_memory_gib"] is None
        folder = cfg.adapter_dir(name)
        assert {"adapter_model.safetensors", "adapter_config.json", "train_config.json", "log_history.json"} <= {
            p.name for p in folder.iterdir()}
        resolved = json.loads((folder / "train_config.json").read_text())
        assert resolved["lora"]["r"] == 8 and resolved["grad_accumulation"] == 2
        assert sorted(resolved["lora"]["target_modules"]) == sorted(
            ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
        assert [e["step"] for e in json.loads((folder / "log_history.json").read_text()) if "loss" in e] == list(range(1, 7))
        assert not cfg.checkpoint_dir(name).exists()  # optimizer states go once the adapter is saved
    student = load_model("smoke", adapter=str(cfg.adapter_dir("distilled")))
    assert type(student.model).__name__ == "PeftModelForCausalLM"
    record = json.loads((cfg.examples_file("distilled")).read_text().splitlines()[0])
    assert answer_chat(student, record["messages"][:2], 16)["new_tokens"] > 0


def interrupt_after(step: int):
    """A trainer callback that stops training (as Ctrl-C would) after a given step."""
    from transformers import TrainerCallback

    class Interrupt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise KeyboardInterrupt(f"interrupted after step {step}")

    return Interrupt()


@pytest.mark.slow
def test_an_interrupted_training_resumes_and_a_finished_adapter_is_skipped(smoke_model, outputs, run04):
    cfg = StudentConfig.from_params({**FAST, "run": run04, "max_steps": 5, "save_steps": 2, "adapters": ["sft"]})
    with pytest.raises(KeyboardInterrupt):
        train_adapter(cfg, "sft", callbacks=[interrupt_after(3)])
    assert (cfg.checkpoint_dir("sft") / "checkpoint-2").is_dir()
    assert not (cfg.adapter_dir("sft") / "result.json").exists()
    longer = StudentConfig.from_params({**FAST, "run": run04, "max_steps": 6, "save_steps": 2, "adapters": ["sft"]})
    result = train_adapter(longer, "sft")
    assert result["resumed_from"] == "checkpoint-2" and result["steps"] == 6
    log = json.loads((cfg.adapter_dir("sft") / "log_history.json").read_text())
    assert [e["step"] for e in log if "loss" in e] == [1, 2, 3, 4, 5, 6]  # steps 1-2 come from the checkpoint
    mtime = (cfg.adapter_dir("sft") / "adapter_model.safetensors").stat().st_mtime
    again = train_adapter(longer, "sft")
    assert again["reused"] and again["steps"] == 6
    assert (cfg.adapter_dir("sft") / "adapter_model.safetensors").stat().st_mtime == mtime
    # A finished adapter asked for a different length is trained again, not passed off as the longer one.
    shorter = train_adapter(StudentConfig.from_params({**FAST, "run": run04, "max_steps": 2, "adapters": ["sft"]}), "sft")
    assert not shorter.get("reused") and shorter["steps"] == 2 and shorter["resumed_from"] is None
    # New data from stage 04 makes the finished adapter stale: it is trained again from scratch.
    path = cfg.examples_file("sft")
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:3]))
    fresh = train_adapter(longer, "sft")
    assert not fresh.get("reused") and fresh["resumed_from"] is None and fresh["examples"] == 3


class Watch:
    """A trainer callback that records the model's layers and dtypes when training starts, and counts how often the
    first decoder layer's attention and the LM head run during the training steps."""

    def __new__(cls):
        from transformers import TrainerCallback

        class _Watch(TrainerCallback):
            def __init__(self):
                self.layers, self.dtypes, self.calls, self.handles = set(), {}, {"layer": 0, "lm_head": 0}, []
                self.steps = 0

            def on_train_begin(self, args, state, control, model=None, **kwargs):
                self.layers.update(type(m).__module__ + "." + type(m).__name__ for m in model.modules())
                base = model.get_base_model()
                self.dtypes = {"embed": base.get_input_embeddings().weight.dtype, "lm_head": base.get_output_embeddings().weight.dtype,
                               "norm": base.model.norm.weight.dtype}
                self.checkpointing = getattr(base, "is_activation_checkpointing", None) or base.is_gradient_checkpointing
                count = lambda key: (lambda *a, **k: self.calls.__setitem__(key, self.calls[key] + 1))  # noqa: E731
                # A module inside the layer, early in it: the recompute runs the layer's forward again (up to what
                # the backward pass needs), and so this module.
                self.handles = [base.model.layers[0].self_attn.register_forward_hook(count("layer")),
                                base.get_output_embeddings().register_forward_hook(count("lm_head"))]

            def on_step_end(self, args, state, control, **kwargs):
                self.steps = state.global_step

            def on_train_end(self, args, state, control, **kwargs):
                for h in self.handles:
                    h.remove()

        return _Watch()


@pytest.mark.slow
def test_forced_4bit_on_cpu_trains_nf4_qlora(smoke_model, outputs, run04):
    """QLoRA as on a GPU: NF4 layers, the weights that are not 4-bit kept in the compute dtype (not upcast to
    float32), gradient checkpointing really recomputing each layer, and a loss that never runs the full LM head."""
    watch = Watch()
    cfg = StudentConfig.from_params({**FAST, "run": run04, "load_4bit": True, "gradient_checkpointing": True,
                                     "max_steps": 3, "adapters": ["sft"]})
    result = train_adapter(cfg, "sft", callbacks=[watch])
    assert result["load_4bit"] and result["steps"] == 3
    assert "bitsandbytes.nn.modules.Linear4bit" in watch.layers and "peft.tuners.lora.bnb.Linear4bit" in watch.layers
    assert watch.dtypes == {"embed": torch.bfloat16, "lm_head": torch.bfloat16, "norm": torch.bfloat16}
    micro_batches = 3 * cfg.grad_accumulation()
    assert watch.checkpointing and watch.calls["layer"] == 2 * micro_batches  # forward, then again in backward
    assert watch.calls["lm_head"] == 0  # the fused loss projects the hidden states itself, in chunks
    assert result["loss_after"] < result["loss_before"]
    assert (cfg.adapter_dir("sft") / "adapter_model.safetensors").is_file()


def test_empty_input_says_what_to_change_and_trains_nothing(outputs):
    write_dehint(outputs, "empty", [], [])
    cfg = StudentConfig.from_params({"profile": "smoke", "run": "empty"})
    metrics = train_student(cfg)
    assert metrics["skipped"] and metrics["trained"] == []
    assert "n_games" in metrics["reason"] and "max_steps" in metrics["reason"] and "profile" in metrics["reason"]
    assert metrics["adapters"]["distilled"]["reason"].startswith("stage 04 wrote no distilled examples")
    assert json.loads((cfg.stage_dir / "metrics.json").read_text())["skipped"] is True
    assert not (cfg.stage_dir / "adapters").exists()
    missing = StudentConfig.from_params({"profile": "smoke", "run": "never-ran"})
    with pytest.raises(StudentTrainingError, match="run notebook 04"):
        train_student(missing)


def test_out_of_memory_becomes_a_message_that_names_the_memory_parameters(smoke_model, outputs, run04, monkeypatch):
    import ragdistill.method.student.fit as fit

    cfg = StudentConfig.from_params({**FAST, "run": run04, "adapters": ["sft"]})

    def oom():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(GpuOutOfMemory) as err:
        guard_oom(cfg, "sft", oom)
    message = str(err.value)
    for name in ("per_device_batch", "max_length", "gradient_checkpointing", "load_4bit", "lora_r", "Tried to allocate"):
        assert name in message
    assert "\n" not in message and err.value.__context__ is None  # one paragraph, no chained traceback
    assert guard_oom(cfg, "sft", lambda: 7) == 7
    # The same conversion on the real path: the model load runs out of memory.
    monkeypatch.setattr(fit, "load_base", lambda cfg: oom())
    with pytest.raises(GpuOutOfMemory, match="'sft' adapter"):
        train_adapter(cfg, "sft")


@pytest.mark.slow
def test_script_entry_point_trains_and_reports_bad_options(smoke_model, outputs, run04):
    env = {**os.environ, "RAGDISTILL_OUTPUTS": str(outputs), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "ragdistill.method.student.train", "--run", run04, "--profile", "smoke", "--adapters", "sft",
           "--max-steps", "2", "--effective-batch", "2"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    stage = outputs / "runs" / run04 / "05_student"
    metrics = json.loads((stage / "metrics.json").read_text())
    assert metrics["trained"] == ["sft"] and metrics["adapters"]["sft"]["steps"] == 2
    assert json.loads((stage / "config.json").read_text())["max_steps"] == 2
    bad = subprocess.run(cmd + ["--overlong", "truncate"], env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "error: " in bad.stderr and "overlong='truncate'" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.slow
def test_notebook_05_trains_on_smoke_and_skips_plainly_without_data(smoke_model, outputs, episodes):
    from ragdistill.run.pipeline import run_chain

    write_dehint(outputs, "nb05", dehint_rows(episodes[:2], "distilled"), dehint_rows(episodes[2:], "sft"))
    run_dir = run_chain("smoke", run="nb05", only=["05_student"], extra={"max_steps": 3, "effective_batch": 2})
    stage = run_dir / "05_student"
    metrics = json.loads((stage / "metrics.json").read_text())
    assert metrics["trained"] == ["distilled", "sft"]
    assert all(metrics["adapters"][n]["steps"] == 3 for n in ("distilled", "sft"))
    assert json.loads((stage / "config.json").read_text())["max_steps"] == 3
    executed = json.loads((stage / "05_student_training.ipynb").read_text())
    assert any(o.get("output_type") == "display_data" for c in executed["cells"] for o in c.get("outputs", []))

    write_dehint(outputs, "nb05-empty", [], [])
    run_dir = run_chain("smoke", run="nb05-empty", only=["05_student"])
    metrics = json.loads((run_dir / "05_student" / "metrics.json").read_text())
    assert metrics["skipped"] and "n_games" in metrics["reason"]
    text = (run_dir / "05_student" / "05_student_training.ipynb").read_text()
    assert "not trained: stage 04 wrote no distilled examples" in text


def test_training_runs_on_the_configured_cpu_threads_and_gives_them_back(smoke_model, outputs, run04):
    """`threads` (the cpu chain: 2, as no game runs beside stage 05) holds while the trainer steps; the process's
    own setting comes back after."""
    from transformers import TrainerCallback

    seen = []

    class Threads(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            seen.append(torch.get_num_threads())

    before = torch.get_num_threads()
    wanted = before + 1
    cfg = StudentConfig.from_params({**FAST, "run": run04, "max_steps": 2, "adapters": ["sft"], "threads": wanted})
    result = train_adapter(cfg, "sft", callbacks=[Threads()])
    assert result["steps"] == 2 and seen == [wanted, wanted]
    assert torch.get_num_threads() == before
    with pytest.raises(ConfigError, match="threads"):
        StudentConfig.from_params({**FAST, "run": run04, "threads": -1})
