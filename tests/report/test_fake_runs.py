"""The fixture's run directories carry only config keys the real config has (as Hydra saves it, interpolations
unresolved), so a report test cannot pass on a key the trainer never writes."""
import pytest
from omegaconf import OmegaConf

from orthonoise.report.collect import flatten
from tests.report.fake_runs import TARGETS, make_config


@pytest.mark.parametrize("optimizer", sorted(TARGETS))
@pytest.mark.parametrize("schedule", ["constant", "linear"])
def test_fake_config_keys_are_composed_keys(compose_cfg, optimizer, schedule):
    fake, choices = make_config(seed=1, optimizer=optimizer, schedule=schedule)
    overrides = [f"{group}={choice}" for group, choice in choices.items() if not group.startswith("hydra")]
    composed = flatten(OmegaConf.to_container(compose_cfg(*overrides), resolve=False))
    fake = flatten(fake)
    assert set(fake) - set(composed) == set()
    interpolations = {key: value for key, value in fake.items() if str(value).startswith("${")}
    assert interpolations == {key: composed[key] for key in interpolations}
