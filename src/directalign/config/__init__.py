"""Every command's configuration: key groups (groups.py), commands made of them (commands.py), loading from
YAML, the command line and keyword arguments, and the --help listing (loading.py). Imports no torch."""

from directalign.config.commands import (
    COMMANDS,
    GRPOConfig,
    IterativeDPOConfig,
    OnlineDPOConfig,
    RewardModelConfig,
    TrainConfig,
)
from directalign.config.loading import keys_help, load_config, parse_cli_overrides

__all__ = [
    "COMMANDS",
    "GRPOConfig",
    "IterativeDPOConfig",
    "OnlineDPOConfig",
    "RewardModelConfig",
    "TrainConfig",
    "keys_help",
    "load_config",
    "parse_cli_overrides",
]
