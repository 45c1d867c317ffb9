"""A stage with a time budget stops on time and its learning rate follows its progress."""

from __future__ import annotations

import json
import math

import pytest
import tiny
import torch

from llavakit.train.callbacks import TimeBudget, budgeted_schedule


class Clock:
    """A TimeBudget whose elapsed time is set by the test."""

    def __init__(self, seconds: float):
        self.budget = TimeBudget(seconds)
        self.budget.elapsed = lambda: self.now  # type: ignore[method-assign]
        self.now = 0.0


def schedule(shape: str, warmup: float, total: int, clock: Clock):
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    return optimizer, budgeted_schedule(optimizer, shape, warmup, total, clock.budget)


def lr_after(optimizer, scheduler, steps: int) -> float:
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
    return optimizer.param_groups[0]["lr"]


def test_without_time_pressure_the_schedule_is_transformers_cosine():
    from transformers import get_cosine_schedule_with_warmup

    clock = Clock(1e9)
    optimizer, ours = schedule("cosine", 0.1, 100, clock)
    reference_optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    reference = get_cosine_schedule_with_warmup(reference_optimizer, 10, 100)
    for _ in range(100):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(
            reference_optimizer.param_groups[0]["lr"], abs=1e-6
        )
        optimizer.step()
        ours.step()
        reference_optimizer.step()
        reference.step()


def test_when_time_runs_ahead_the_learning_rate_decays_by_time():
    clock = Clock(60.0)
    optimizer, scheduler = schedule("cosine", 0.1, 1000, clock)
    clock.now = 33.0  # 55% of the budget after 10 of 1000 steps (1%)
    assert lr_after(optimizer, scheduler, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    clock.now = 60.0
    assert lr_after(optimizer, scheduler, 1) == pytest.approx(0.0, abs=1e-9)
    linear_optimizer, linear = schedule("linear", 0.0, 1000, clock)
    clock.now = 30.0
    assert lr_after(linear_optimizer, linear, 1) == pytest.approx(0.5)


def test_time_spent_by_other_callbacks_is_not_training_time(monkeypatch):
    class Evaluation:
        paused_seconds = 0.0

    evaluation = Evaluation()
    budget = TimeBudget(10.0, paused_by=[evaluation])
    now = [100.0]
    monkeypatch.setattr("llavakit.train.callbacks.time.perf_counter", lambda: now[0])
    budget.on_train_begin(None, None, None)
    now[0] = 109.0
    evaluation.paused_seconds = 5.0
    assert budget.elapsed() == pytest.approx(4.0)
    assert budget.fraction_spent() == pytest.approx(0.4)


def test_unknown_schedule_shapes_are_refused():
    with pytest.raises(ValueError, match="cannot follow a time budget"):
        schedule("polynomial", 0.1, 10, Clock(1.0))
    with pytest.raises(ValueError, match="positive"):
        TimeBudget(0)


def test_a_budgeted_stage_stops_early_on_a_decayed_learning_rate(
    tmp_path, tiny_model_config, tiny_data
):
    from llavakit.train.run import train

    recipe = tiny.tiny_recipe(
        tiny_model_config,
        tiny_data,
        tmp_path,
        "instruct",
        max_steps=100_000,
        time_budget_s=1.5,
        lr_scheduler="cosine",
        warmup_ratio=0.03,
    )
    folder = train(recipe)
    config = json.loads((folder / "config.json").read_text())
    assert config["metadata"]["stopped_by_time_budget"] is True
    assert 1 <= config["metadata"]["steps"] < 100_000
    history = json.loads((folder / "loss_history.json").read_text())
    assert history[-1]["learning_rate"] < 0.05 * recipe.train.learning_rate
