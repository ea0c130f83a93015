"""Known messages of the pinned libraries that read like errors but are not, filtered each by its exact text."""

from __future__ import annotations

import logging
import warnings


class _NoOptionalKernels(logging.Filter):
    """bitsandbytes' CPU backend tries the optional `kernels` package (a Hub download of a faster 4-bit matmul) and
    logs a warning when it is not installed; it then uses its own CPU kernel. The project never installs it (no
    network on the cpu profile), so that one message is dropped; any other failure to load it still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not (text.startswith("Failed to load CPU gemm_4bit_forward from kernels-community")
                    and "No module named 'kernels'" in text)


_installed = False


def install() -> None:
    """Install the filters once per process (importing ragdistill does it)."""
    global _installed
    if _installed:
        return
    _installed = True
    logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_NoOptionalKernels())
    # peft 0.21's get_peft_model (and trl 1.16's generation helpers) read `model.is_gradient_checkpointing`, which
    # transformers 5.23 deprecates in favour of `is_activation_checkpointing`: raised on our calls into peft, but
    # peft's and trl's to fix, and nothing in this project reads the old name.
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
