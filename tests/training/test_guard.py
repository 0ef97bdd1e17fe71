"""Run health inside the training loop, on a tiny random model: warnings, the KL budget, early stopping, samples."""

import json

import pytest

from directalign.config import load_config
from directalign.engine.metrics import read_metrics
from directalign.errors import ConfigError
from directalign.training.dpo import train


def _cfg(tiny_model_dir, out, **kw):
    base = dict(
        model=str(tiny_model_dir),
        output_dir=str(out),
        logging_steps=1,
        builtin_train_pairs=16,
        builtin_eval_pairs=4,
        per_device_train_batch_size=2,
        save_steps=0,
        warmup_ratio=0.0,
        seed=3,
        kl_prompts=4,
        eval_max_new_tokens=16,
    )
    return load_config("train", overrides={**base, **kw})


def health_events(out):
    return [e for e in read_metrics(out / "metrics.jsonl") if e["split"] == "health"]


def test_overfitting_run_warns_in_console_and_metrics(tiny_model_dir, tmp_path, capsys):
    # Four pairs, full fine-tuning at a high learning rate: accuracy 1.0 and margins growing every step.
    out = tmp_path / "run"
    train(_cfg(tiny_model_dir, out, builtin_train_pairs=4, per_device_train_batch_size=4, use_peft=False,
               learning_rate=1e-2, max_steps=6, kl_prompts=0))
    events = health_events(out)
    assert [(e["check"], e["step"], e["level"]) for e in events] == [("overfitting", 6, "warning")]
    assert "With 4 training pairs" in events[0]["message"]
    assert "health [overfitting] step 6" in capsys.readouterr().out


def test_a_run_that_does_not_learn_raises_no_health_warning_and_early_stopping_stops_it(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    # A learning rate of 1e-12 moves the loss by about 1e-12: under the threshold, so it does not count.
    result = train(_cfg(tiny_model_dir, out, learning_rate=1e-12, max_steps=8, kl_prompts=0,
                        early_stopping_metric="train/loss", early_stopping_patience=2,
                        early_stopping_threshold=1e-6))
    events = health_events(out)
    assert [(e["check"], e["level"]) for e in events] == [("early_stopping", "stop")]
    # The loss is log 2 at every step: best at step 1, no improvement at steps 2 and 3.
    assert result.steps == 3 and "train/loss has not improved" in result.stop_reason
    assert [e["step"] for e in read_metrics(out / "metrics.jsonl") if e["split"] == "train"] == [1, 2, 3]


def test_kl_budget_stops_a_drifting_run_and_keeps_the_last_eval_within_budget(tiny_model_dir, tmp_path):
    # Full fine-tuning at lr 0.1 drifts by about 0.3, 1.7, 3 nats per sequence after steps 1, 2, 3.
    out = tmp_path / "run"
    result = train(_cfg(tiny_model_dir, out, use_peft=False, learning_rate=0.1, max_steps=6, eval_steps=1,
                        save_steps=1, kl_budget=1.0))
    evals = {(e["tag"], e["step"]): e for e in read_metrics(out / "metrics.jsonl") if e["split"] == "eval"}
    periodic = [e for (tag, _), e in evals.items() if tag == "periodic"]
    over = periodic[-1]
    assert over["kl"] > 1.0 and all(e["kl"] <= 1.0 for e in periodic[:-1])
    kept = periodic[-2] if len(periodic) > 1 else evals[("before", 0)]
    assert result.steps == kept["step"] < over["step"] < 6
    assert f"weights of step {kept['step']}" in result.stop_reason
    # The final outputs are the kept weights: the "after" eval reproduces the kept eval exactly.
    after = evals[("after", kept["step"])]
    for key in ("kl", "implicit_accuracy", "mean_margin", "logps_chosen", "logps_rejected"):
        assert after[key] == kept[key], key
    assert result.eval_after["kl"] == kept["kl"] <= 1.0
    # Checkpoints written after the kept eval are gone; the one at it stays.
    assert sorted(p.name for p in out.glob("checkpoint-*")) == [f"checkpoint-{kept['step']}"]
    assert (out / "model" / "model.safetensors").is_file()
    stops = [e for e in health_events(out) if e["level"] == "stop"]
    assert [(e["check"], e["step"]) for e in stops] == [("kl_budget", over["step"])]


def test_a_run_within_its_kl_budget_runs_to_the_end(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    result = train(_cfg(tiny_model_dir, out, learning_rate=1e-3, max_steps=2, eval_steps=1, kl_budget=50.0))
    assert result.steps == 2 and result.stop_reason is None
    assert health_events(out) == []
    kls = [e["kl"] for e in read_metrics(out / "metrics.jsonl") if e["split"] == "eval"]
    assert len(kls) == 3 and kls[0] == 0.0 and all(k < 50 for k in kls)


def test_sample_generations_before_and_after(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    train(_cfg(tiny_model_dir, out, learning_rate=1e-2, max_steps=1, kl_prompts=0, sample_generations=2))
    lines = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert [(g["stage"], g["step"]) for g in lines] == [("before", 0)] * 2 + [("after", 1)] * 2
    assert lines[0]["prompt"] == lines[2]["prompt"] and lines[0]["prompt"][-1]["role"] == "user"
    assert all(isinstance(g["completion"], str) and 0.0 <= g["reward"] <= 1.0 for g in lines)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"kl_budget": 5.0}, "kl_budget needs eval_steps"),
        ({"kl_budget": 5.0, "eval_steps": 10, "loss_type": "simpo"}, "needs a reference model"),
        ({"early_stopping_metric": "implicit_accuracy"}, "set eval_steps"),
        ({"early_stopping_mode": "lowest"}, "early_stopping_mode must be one of min, max; got 'lowest'"),
    ],
)
def test_health_keys_that_cannot_work_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("train", overrides=overrides)
