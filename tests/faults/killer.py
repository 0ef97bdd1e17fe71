"""`python killer.py POINT N ARGS...`: run `directalign ARGS` in this process and kill it with SIGKILL at the Nth
time it reaches POINT, the way a power cut or the OOM killer would, with nothing flushed or cleaned up:

- step: the start of an optimizer step's bookkeeping (after the backward pass, before the step is applied);
- checkpoint: inside a checkpoint's staging folder, after its weights and some of its JSON files are written;
- final: inside the final save's staging folder, after the weights and before the tokenizer.
"""

from __future__ import annotations

import os
import signal
import sys


def _kill_at(owner, name: str, n: int) -> None:
    original = getattr(owner, name)
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)


def main() -> int:
    point, n, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    if point == "step":
        from directalign.engine.loop import StepLoop

        _kill_at(StepLoop, "end_step", n)
    elif point == "checkpoint":
        from directalign.engine import checkpoint

        _kill_at(checkpoint, "_write_json", n)
    elif point == "final":
        from transformers import PreTrainedTokenizerBase

        _kill_at(PreTrainedTokenizerBase, "save_pretrained", n)
    else:
        raise SystemExit(f"unknown point {point!r}")
    from directalign.cli.main import main as directalign

    return directalign(args)


if __name__ == "__main__":
    sys.exit(main())
