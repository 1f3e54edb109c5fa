"""Benchmarks measured in rounds (throughput.py, replay.py apex): worker counts measured alternately, the ratio the median round's."""
import pytest

from unirl.benchmarks import throughput


def test_rounds_alternate_worker_counts_and_report_the_median_ratio(monkeypatch):
    calls = []
    rates = iter([10_000, 17_000, 14_000, 25_200, 12_000, 24_000])  # rounds: 1.70x, 1.80x, 2.00x

    def fake_measure(algo, backend, num_workers, seconds, env, config=None):
        calls.append(num_workers)
        return {"num_workers": num_workers, "env_steps_per_s": next(rates), "driver_cpu_s_per_1k_steps": 0.01,
                "worker_cpu_s_per_1k_steps": 0.05}

    monkeypatch.setattr(throughput, "measure", fake_measure)
    one, two = throughput.scaling("IMPALA", "ray", 1.0, "CartPole-v1", {}, rounds=3)
    assert calls == [1, 2, 1, 2, 1, 2]
    assert [round(r, 6) for r in two["ratio_rounds"]] == [1.7, 1.8, 2.0]
    assert round(two["ratio_to_1_worker"], 6) == 1.8 and one["env_steps_per_s"] == 14_000  # the median round's rows
    assert round(two["bound_on_2_cores"], 6) == round(2 * 0.05 / 0.06, 6)


def test_an_even_number_of_rounds_takes_the_mean_of_the_middle_two(monkeypatch):
    rates = iter([10_000, 16_000, 10_000, 18_000])  # 1.6x, 1.8x

    monkeypatch.setattr(throughput, "measure", lambda algo, backend, n, seconds, env, config=None: {
        "num_workers": n, "env_steps_per_s": next(rates), "driver_cpu_s_per_1k_steps": 0.01,
        "worker_cpu_s_per_1k_steps": None})
    _, two = throughput.scaling("IMPALA", "ray", 1.0, "CartPole-v1", {}, rounds=2)
    assert round(two["ratio_to_1_worker"], 6) == 1.7 and two["bound_on_2_cores"] is None


def test_apex_rounds_take_each_actor_counts_median_ratio():
    from unirl.benchmarks import replay

    rates = iter([10_000, 17_000, 14_000, 25_200, 12_000, 24_000])  # rounds: 1.70x, 1.80x, 2.00x
    calls = []

    def fake(backend, n, seconds, envs_per_actor, steps_per_task, config):
        calls.append(n)
        actor_us = 80.0 if len(calls) != 3 else 60.0  # the median round's 1-actor run
        return {"actors": n, "env_steps_per_s": next(rates), "driver_cpu_us_per_step": 10.0,
                "shards_cpu_us_per_step": 10.0, "actors_cpu_us_per_step": actor_us}

    one, two = replay.apex_scaling("ray", [1, 2], rounds=3, measure=fake)
    assert calls == [1, 2, 1, 2, 1, 2]
    assert [round(r, 6) for r in two["ratio_rounds"]] == [1.7, 1.8, 2.0]
    assert two["ratio_to_1"] == pytest.approx(1.8) and two["env_steps_per_s"] == 25_200
    # every row from the 2-actor median round, so the rates shown give the ratio shown
    assert two["base_env_steps_per_s"] == one["env_steps_per_s"] == 14_000
    assert one["ratio_to_1"] == 1.0 and one["bound_2_actors_on_2_cores"] == pytest.approx(2 * 60 / 80)
