"""Registrar configuration: defaults, range checks, TOML loading."""

from __future__ import annotations

import pytest

from rserpool.config import RegistrarConfig, load_registrar_config
from rserpool.errors import ConfigError


def test_defaults_are_rsplibs():
    c = RegistrarConfig()
    assert (c.asap_port, c.enrp_port, c.announce_group, c.announce_ttl) == \
        (3863, 9901, "239.0.0.50", 30)
    assert (c.keep_alive_interval, c.keep_alive_timeout, c.peer_max_time_last_heard,
            c.max_bad_pe_reports, c.max_hres_items) == (5.0, 5.0, 5.0, 3, 3)


@pytest.mark.parametrize("change", [
    {"keep_alive_interval": 0.1}, {"announce_ttl": 0}, {"max_hres_items": 129},
    {"asap_port": 70000}, {"transports": ("sctp", "udp")}, {"transports": ()},
    {"peers": ("10.0.0.1",)}, {"peers": "10.0.0.1:9901"}, {"addresses": ()},
    {"announce": "yes"}, {"max_elements_per_ht_request": 2000}, {"registrar_id": -1},
])
def test_out_of_range_values_are_refused(change):
    with pytest.raises(ConfigError):
        RegistrarConfig(**change)
    with pytest.raises(ConfigError):
        RegistrarConfig().replace(**change)


def test_toml_file_and_overrides(tmp_path):
    path = tmp_path / "pr.toml"
    path.write_text('asap_port = 4000\npeers = ["10.0.0.2:9901"]\nannounce = false\n'
                    'keep_alive_interval = 2.5\n')
    c = load_registrar_config(str(path), asap_port=5000)
    assert (c.asap_port, c.peers, c.announce, c.keep_alive_interval) == \
        (5000, ("10.0.0.2:9901",), False, 2.5)
    path.write_text("asap_prot = 1\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        load_registrar_config(str(path))
    path.write_text("asap_port = [\n")
    with pytest.raises(ConfigError):
        load_registrar_config(str(path))
    with pytest.raises(ConfigError):
        load_registrar_config(str(tmp_path / "missing.toml"))
