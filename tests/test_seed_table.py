"""benchmarks/seed_table.py: its configs build, and --merge joins halves run side by side into one table."""
import json

import pytest

from unirl.benchmarks import seed_table


def _run(algo, game, ret):
    return {"algo": algo, "game": game, "steps": 12000, "train_return": ret, "eval_return": ret + 1,
            "wall_s": 600.5, "curve": [[6000, ret / 2, 300.0], [12000, ret, 600.5]]}


@pytest.mark.parametrize("algo", ["IMPALA", "A2C", "A3C", "PPO"])
def test_each_config_builds_on_minatar(algo):
    import unirl

    cls = unirl.get_algorithm_class(algo)
    cfg = dict(seed_table.CONFIGS[algo], env="MinAtar/Breakout-v1", model=seed_table.MODEL)
    dropped = set(cfg) - set(cls.config_class.field_names())
    assert not dropped, f"{algo} config keys the algorithm does not have: {dropped}"
    cls.config_class.from_dict(cfg)


def test_merge_orders_by_seed_game_then_seed_algorithm_and_prints_one_table(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps([_run("A3C", "Seaquest", 3.0), _run("IMPALA", "Breakout", 1.0)]))
    b.write_text(json.dumps([_run("A2C", "Breakout", 2.0), _run("IMPALA", "Seaquest", 4.0)]))
    png = tmp_path / "t.png"
    seed_table.main(["--merge", str(a), str(b), "--plot", str(png), "--json", str(tmp_path / "m.json")])
    merged = json.loads((tmp_path / "m.json").read_text())
    assert [(r["algo"], r["game"]) for r in merged] == [
        ("IMPALA", "Breakout"), ("A2C", "Breakout"), ("IMPALA", "Seaquest"), ("A3C", "Seaquest")]
    out = capsys.readouterr().out
    assert "after 600 s per run" in out
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| algorithm | Breakout (MinAtar) / Breakout (seed) | Seaquest (MinAtar) / QBert (seed) |")
    assert rows[1:] == ["| IMPALA | 1.0 (12k steps) / 538 | 4.0 (12k steps) / 10850 |",
                        "| A2C | 2.0 (12k steps) / 268 | - / 1212 |",
                        "| A3C | - / 10 | 3.0 (12k steps) / 500 |"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_merge_refuses_a_run_present_twice(tmp_path):
    a = tmp_path / "a.json"
    a.write_text(json.dumps([_run("A2C", "Breakout", 2.0)]))
    with pytest.raises(SystemExit, match=r"A2C on Breakout appears twice \(in .*a.json\)"):
        seed_table.main(["--merge", str(a), str(a)])
