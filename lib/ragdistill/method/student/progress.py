"""Training progress as the project's bar: in a headless run the terminal shows the steps and the time left."""

from __future__ import annotations


def step_bar(name: str):
    """A Trainer callback that shows the optimizer steps as the project's bar ("training distilled: 12/54 steps"):
    in a headless run, Trainer's notebook bar would be HTML that neither the terminal nor the executed notebook
    shows as it ends."""
    from transformers import TrainerCallback

    from ragdistill.run.progress import tqdm

    class StepBar(TrainerCallback):
        def __init__(self):
            self.bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc=f"training {name}", unit="steps")

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    return StepBar()


def headless_progress(trainer, name: str) -> None:
    """In the chain's headless runs, Trainer's own progress bar gives way to `step_bar`."""
    from transformers.trainer_callback import ProgressCallback
    from transformers.utils.notebook import NotebookProgressCallback

    from ragdistill.run.progress import HEADLESS

    if HEADLESS:
        trainer.remove_callback(NotebookProgressCallback)
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(step_bar(name))
