"""Typed notebook configs: papermill parameters in, a validated dataclass out (one per stage)."""

from ragdistill.run.config.base import MAX_EXAMPLE_TOKENS, ConfigError, StageConfig, is_local_profile
from ragdistill.run.config.stages import DehintConfig, EvalConfig, FailureConfig, HintConfig, RolloutStageConfig, TeacherConfig, TourConfig
from ragdistill.run.config.student import SOURCES, StudentConfig

__all__ = ["MAX_EXAMPLE_TOKENS", "SOURCES", "ConfigError", "DehintConfig", "EvalConfig", "FailureConfig", "HintConfig",
           "RolloutStageConfig", "StageConfig", "StudentConfig", "TeacherConfig", "TourConfig", "is_local_profile"]
