"""An unknown env id that an installed package registers on import gets a hint naming `package:EnvId`."""
from __future__ import annotations

import gymnasium as gym
import pytest

from unirl.env import check_env_id
from unirl.errors import UnirlError


def test_installed_package_that_registers_the_env_is_named(tmp_path, monkeypatch):
    pkg = tmp_path / "gridpkgunirltest"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "import gymnasium as gym\n"
        "gym.register('GridPkgUnirlTest-Empty-5x5-v0', entry_point='gymnasium.envs.classic_control:CartPoleEnv')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(UnirlError) as e:
            check_env_id("GridPkgUnirlTest-Empty-5x5-v0")
        message = str(e.value)
        assert "unknown environment `GridPkgUnirlTest-Empty-5x5-v0`" in message
        assert "`gridpkgunirltest:GridPkgUnirlTest-Empty-5x5-v0`" in message
        check_env_id("gridpkgunirltest:GridPkgUnirlTest-Empty-5x5-v0")  # the hint works
    finally:
        gym.registry.pop("GridPkgUnirlTest-Empty-5x5-v0", None)


def test_minigrid_ids_load_their_package_or_name_the_extra():
    try:
        import minigrid  # noqa: F401
    except ImportError:
        minigrid = None
    if minigrid is None:
        with pytest.raises(UnirlError, match=r"pip install 'unirl\[minigrid\]'"):
            check_env_id("MiniGrid-Empty-5x5-v0")
    else:
        check_env_id("MiniGrid-Empty-5x5-v0")  # the family's package registers it
        assert "MiniGrid-MemoryS7-v0" in gym.registry


def test_other_unknown_ids_keep_the_plain_error():
    with pytest.raises(UnirlError) as e:
        check_env_id("CartPol-v1")
    assert str(e.value) == ("unknown environment `CartPol-v1`: Gymnasium has no env with that id. "
                            "Did you mean `CartPole-v1`?")
    with pytest.raises(UnirlError) as e:
        check_env_id("Test-v0")  # `test` is a standard-library package: never imported for a hint
    assert "registers it" not in str(e.value)
