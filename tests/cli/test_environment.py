"""The CLI sets OpenMP's wait policy before torch loads, and leaves a user's own choice alone."""

import os
import subprocess
import sys

PROBE = "import directalign.cli.main, os, sys; assert 'torch' not in sys.modules; print(os.environ['OMP_WAIT_POLICY'])"


def _policy(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if env_value is not None:
        env["OMP_WAIT_POLICY"] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_passive_by_default_before_torch_is_imported():
    assert _policy(None) == "PASSIVE"


def test_a_users_policy_is_kept():
    assert _policy("ACTIVE") == "ACTIVE"
