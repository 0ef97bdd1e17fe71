"""Each health check on crafted metric streams: one stream that must trigger it and one that must not."""

import pytest

from directalign.engine.health import HealthConfig, HealthMonitor, parse_metric_name, trend
from directalign.errors import ConfigError


def train_event(step, loss=0.69, margin=0.0, accuracy=0.5, chosen=-20.0, rejected=-25.0):
    return {
        "step": step,
        "split": "train",
        "loss": loss,
        "rewards/margins": margin,
        "rewards/accuracies": accuracy,
        "logps/chosen": chosen,
        "logps/rejected": rejected,
    }


def eval_event(step, tag="periodic", **metrics):
    return {"step": step, "split": "eval", "tag": tag, **metrics}


def feed(monitor, events):
    fired = []
    for event in events:
        fired += monitor.observe(event)
    return fired


def checks(fired):
    return [e.check for e in fired]


def healthy_stream(n=10):
    """Loss falling because the margin grows; chosen log-prob flat, rejected falling; accuracy below 1."""
    return [
        train_event(s, loss=0.69 - 0.02 * s, margin=0.05 * s, accuracy=0.6 + 0.02 * s, chosen=-20.0 + 0.1 * (s % 2),
                    rejected=-25.0 - 0.5 * s)
        for s in range(1, n + 1)
    ]


def test_healthy_stream_fires_nothing():
    assert feed(HealthMonitor(HealthConfig(n_train_pairs=500)), healthy_stream()) == []


def test_trend_is_the_fitted_change_and_its_steadiness():
    change, steady = trend([0.0, 1.0, 2.0, 3.0])
    assert change == pytest.approx(3.0) and steady == 1.0
    change, steady = trend([0.0, 1.0, 0.5, 1.5])
    assert 0 < change < 1.5 and steady == pytest.approx(2 / 3)


def test_margin_stuck_fires_when_both_logps_fall_with_a_flat_margin():
    # RPO-like: the loss falls (its NLL part), the margin stays ~0, and both responses lose likelihood.
    stream = [train_event(s, loss=0.9 - 0.02 * s, margin=0.01 * (-1) ** s, chosen=-20 - 2 * s, rejected=-25 - 2 * s)
              for s in range(1, 6)]
    fired = feed(HealthMonitor(HealthConfig()), stream)
    assert checks(fired) == ["margin_stuck", "likelihood_displacement"]
    assert "losing likelihood together" in fired[0].message and fired[0].step == 5


def test_margin_stuck_needs_the_margin_near_zero():
    stream = [train_event(s, loss=0.9 - 0.02 * s, margin=0.3 * s, chosen=-20 - 2 * s, rejected=-25 - 2.6 * s)
              for s in range(1, 6)]
    assert "margin_stuck" not in checks(feed(HealthMonitor(HealthConfig()), stream))


def test_likelihood_displacement_suggests_rpo_and_says_how():
    stream = [train_event(s, loss=0.69 - 0.03 * s, margin=0.1 * s, chosen=-20 - 1.5 * s, rejected=-25 - 3 * s)
              for s in range(1, 6)]
    fired = feed(HealthMonitor(HealthConfig()), stream)
    assert checks(fired) == ["likelihood_displacement"]
    assert "--rpo-alpha 1.0" in fired[0].message and "rpo_alpha: 1.0" in fired[0].message


def test_likelihood_displacement_with_rpo_already_on_says_raise_it():
    stream = [train_event(s, chosen=-20 - 1.5 * s) for s in range(1, 6)]
    fired = feed(HealthMonitor(HealthConfig(rpo_alpha=0.5)), stream)
    assert "raise it" in fired[0].message and "--rpo-alpha 1" in fired[0].message


def test_likelihood_displacement_ignores_a_noisy_chosen_logp():
    values = [-20, -23, -21, -24, -22]  # falls by ~1.6 in fit, but half the steps go up
    stream = [train_event(s, chosen=v) for s, v in enumerate(values, 1)]
    assert feed(HealthMonitor(HealthConfig()), stream) == []


def test_overfitting_on_a_tiny_dpo_loss_suggests_ipo_for_small_data():
    stream = healthy_stream(4) + [train_event(5, loss=0.03, margin=4.0, accuracy=1.0)]
    fired = feed(HealthMonitor(HealthConfig(n_train_pairs=300)), stream)
    assert checks(fired) == ["overfitting"]
    assert "300 training pairs" in fired[0].message and "--loss-type ipo" in fired[0].message


def test_overfitting_with_large_data_suggests_beta_first():
    stream = [train_event(1, loss=0.03, margin=4.0, accuracy=1.0)]
    fired = feed(HealthMonitor(HealthConfig(n_train_pairs=50_000, beta=0.1)), stream)
    assert fired[0].message.index("--beta 0.2") < fired[0].message.index("--loss-type ipo")


def test_overfitting_on_full_accuracy_with_growing_margins():
    stream = [train_event(s, loss=0.2 - 0.01 * s, margin=1.0 + 0.5 * s, accuracy=1.0) for s in range(1, 6)]
    assert checks(feed(HealthMonitor(HealthConfig()), stream)) == ["overfitting"]


def test_full_accuracy_with_a_plateaued_margin_is_not_overfitting():
    stream = [train_event(s, loss=0.2, margin=2.0 + 0.01 * (-1) ** s, accuracy=1.0) for s in range(1, 6)]
    assert feed(HealthMonitor(HealthConfig()), stream) == []


def test_the_small_loss_rule_is_for_the_dpo_loss_only():
    stream = [train_event(1, loss=0.01, margin=0.2, accuracy=0.7)]
    assert feed(HealthMonitor(HealthConfig(loss_type="ipo")), stream) == []
    assert feed(HealthMonitor(HealthConfig(rpo_alpha=1.0)), stream) == []


def test_train_held_out_gap_is_overfitting():
    stream = [train_event(s, accuracy=0.95) for s in range(1, 4)]
    monitor = HealthMonitor(HealthConfig())
    feed(monitor, stream)
    fired = monitor.observe(eval_event(3, implicit_accuracy=0.6))
    assert checks(fired) == ["overfitting"] and "gap 0.35" in fired[0].message
    assert HealthMonitor(HealthConfig()).observe(eval_event(3, implicit_accuracy=0.6)) == []  # no train yet
    small_gap = HealthMonitor(HealthConfig())
    feed(small_gap, stream)
    assert small_gap.observe(eval_event(3, implicit_accuracy=0.85)) == []


def test_warnings_are_rate_limited_per_check():
    monitor = HealthMonitor(HealthConfig(cooldown_steps=10))
    fired = feed(monitor, [train_event(s, loss=0.01, margin=5.0, accuracy=1.0) for s in range(1, 25)])
    assert [e.step for e in fired] == [1, 11, 21]


def test_kl_budget_stops_and_keeps_the_last_eval_within_budget():
    monitor = HealthMonitor(HealthConfig(kl_budget=5.0))
    assert feed(monitor, [eval_event(0, "before", kl=0.0), eval_event(10, kl=2.0)]) == []
    assert monitor.stop is None and monitor.kept_step == 10
    warned = monitor.observe(eval_event(20, kl=4.5))  # above 80% of the budget: a warning, no stop
    assert checks(warned) == ["kl_budget"] and warned[0].level == "warning" and monitor.kept_step == 20
    fired = monitor.observe(eval_event(30, kl=6.1))
    assert fired[0].level == "stop" and monitor.stop is fired[0]
    assert monitor.kept_step == 20 and "weights of step 20" in fired[0].message
    assert monitor.observe(eval_event(40, kl=9.0)) == []  # one stop request only


def test_kl_budget_ignores_the_training_kl_and_runs_without_a_budget():
    monitor = HealthMonitor(HealthConfig(kl_budget=1.0))
    monitor.observe({**train_event(1), "kl": 50.0})
    assert monitor.stop is None
    unbounded = HealthMonitor(HealthConfig())
    assert unbounded.observe(eval_event(10, kl=500.0)) == [] and unbounded.stop is None


def test_length_drift_against_the_first_measured_length():
    monitor = HealthMonitor(HealthConfig(length_drift_factor=1.5))
    assert feed(monitor, [eval_event(0, "before", **{"lengths/generated": 20.0}),
                          eval_event(10, **{"lengths/generated": 29.0})]) == []
    fired = monitor.observe(eval_event(20, **{"lengths/generated": 31.0}))
    assert checks(fired) == ["length_drift"] and "1.55x" in fired[0].message and "with length" in fired[0].message


def test_length_drift_warns_when_generations_collapse():
    monitor = HealthMonitor(HealthConfig(length_drift_factor=1.5))
    assert feed(monitor, [eval_event(0, "before", **{"lengths/generated": 22.5}),
                          eval_event(2, **{"lengths/generated": 17.4})]) == []
    fired = monitor.observe(eval_event(4, **{"lengths/generated": 1.4}))
    assert checks(fired) == ["length_drift"] and "stop early" in fired[0].message


def test_early_stopping_max_mode_with_patience():
    monitor = HealthMonitor(HealthConfig(early_stopping_metric="implicit_accuracy", early_stopping_patience=3))
    values = [0.5, 0.6, 0.7, 0.65, 0.7, 0.8]  # two values without improvement, then 0.8 resets the count
    fired = feed(monitor, [eval_event(10 * i, implicit_accuracy=v) for i, v in enumerate(values)])
    assert fired == [] and monitor.stop is None
    fired = feed(monitor, [eval_event(60 + 10 * i, implicit_accuracy=v) for i, v in enumerate([0.79, 0.8, 0.75])])
    assert checks(fired) == ["early_stopping"] and monitor.stop.step == 80
    assert "best 0.8 (max)" in fired[0].message


def test_early_stopping_min_mode_on_a_train_metric_with_threshold():
    config = HealthConfig(early_stopping_metric="train/loss", early_stopping_patience=3, early_stopping_threshold=0.01)
    monitor = HealthMonitor(config)
    assert monitor.stop_mode == "min"
    losses = [0.69, 0.6, 0.595, 0.592, 0.591]  # improvements of < 0.01 do not count
    fired = feed(monitor, [train_event(s, loss=v) for s, v in enumerate(losses, 1)])
    assert checks(fired) == ["early_stopping"] and fired[0].step == 5
    steady = HealthMonitor(config)
    assert feed(steady, [train_event(s, loss=0.7 - 0.05 * s) for s in range(1, 8)]) == []


def test_metric_names_and_config_errors():
    assert parse_metric_name("eval/kl") == ("eval", "kl")
    assert parse_metric_name("rewards/margins") == ("eval", "rewards/margins")
    assert parse_metric_name("train/rewards/margins") == ("train", "rewards/margins")
    with pytest.raises(ConfigError, match="kl_budget"):
        HealthConfig(kl_budget=0)
    with pytest.raises(ConfigError, match="early_stopping_mode"):
        HealthConfig(early_stopping_mode="up")
